"""Masked Keras layers: the only place where a mask touches a kernel.

A *masked layer* (an instance of `MaskedLayerMixin`) masks one weight, its kernel, and adds

* `mask`: a non-trainable 0/1 variable shaped like the kernel (pruned weights have mask 0);
* `scores`: a trainable variable, only when the mask rule needs one;
* whatever the rule keeps (`keep_fraction`, `beta`, `ever_selected`).

`layer.kernel` is the *effective* kernel θ ⊙ rule.mask(...) used by the forward pass, so
gradients reach the raw weights (`layer.raw_kernel`) only through the mask: a pruned weight gets
a gradient of exactly zero and its effective value stays exactly zero whatever the optimizer
does to the raw value (momentum, weight decay). A rule with an `apply_mask(layer, kernel, mask)`
method computes the product itself, with its own gradient (sparsity.NMMask's straight-through
SR-STE passes gradients to the weights its N:M mask prunes). Masks are named by `layer.name`.

Three kinds of layers carry masks:

* twins, one Keras layer class each (`MASKED_TWINS`): `MaskedDense`, `MaskedConv1D/2D/3D`,
  `MaskedConv1D/2D/3DTranspose`, `MaskedDepthwiseConv1D/2D`, `MaskedEinsumDense` and
  `MaskedEmbedding` subclass the layer they replace, take the same arguments (plus `mask_rule`
  and `score_initializer`) and hold the same weights; the twin *is* the masked layer (an
  Embedding's kernel is its `embeddings` table, served masked under both names);
* hosts of several masked weights (`MaskedSeparableConv1D/2D`, a user's `PrunableLayer`): each
  prunable weight gets a `WeightMask` sub-layer named '<layer>.<attribute>' (e.g.
  'sep.depthwise_kernel' and 'sep.pointwise_kernel'), which is the masked layer for that weight;
  the host reads the weight's attribute and gets the child's effective kernel;
* `MaskedMultiHeadAttention`: its four EinsumDense sub-layers become MaskedEinsumDense named
  '<layer>.query', '<layer>.key', '<layer>.value', '<layer>.attention_output'.

Keras never makes up a layer name with a '.', so these cannot clash with auto-named layers
(`sparsify` refuses masked layers that share a name).

Keras' LoRA (`enable_lora`, `lora_rank=`) and quantisation (`quantize`, a quantised dtype
policy) are refused with a ConfigError, both ways: on a masked layer, and by `sparsify` /
`to_twin` for a layer that already uses them. Keras applies both to the stored kernel past the
`kernel` property the mask lives in (a LoRA term would sit outside the mask, unpruned and
untrained-for; quantised calls read the stored integer kernel and ignore the mask). Use them on
the plain ticket instead: `tf_lottery.export.to_plain_model(model)` folds the masks.
"""
import weakref

import keras
import tensorflow as tf

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.layers.initializers import score_initializer as get_score_initializer
from tf_lottery.layers.mask_rules import get_rule

_PACKAGE = "tf_lottery"


class _ForwardMask:
    """The mask a layer's forward pass used, kept for `forward_mask` with the graph, replica
    context and `training` it belongs to (a plain object: neither tracked nor saved)."""

    def __init__(self):
        self.recording, self._context, self._tensor = False, None, None

    @staticmethod
    def _context_of(training):
        return (tf.compat.v1.get_default_graph(), tf.distribute.get_replica_context(),
                bool(training))

    def start(self):
        self.recording, self._context, self._tensor = not tf.executing_eagerly(), None, None

    def set(self, training, tensor):
        self._context, self._tensor = self._context_of(training), tensor

    def get(self, training):
        if self._tensor is None or tf.executing_eagerly():
            return None
        return self._tensor if self._context == self._context_of(training) else None

    def __deepcopy__(self, memo):
        return _ForwardMask()

    def __reduce__(self):
        return _ForwardMask, ()


_RAW = "_raw_"  # a host keeps the variable of masked attribute `a` in `_raw_a`
_CHILD = "_weight_mask_"  # ... and the WeightMask of `a` in `_weight_mask_a`


_NO_LORA = ("masked layers do not support Keras' LoRA (enable_lora, lora_rank): Keras adds the "
            "LoRA update to the stored kernel past the mask, so pruned weights would come back. "
            "Fine-tune a plain copy of the ticket with LoRA instead "
            "(tf_lottery.export.to_plain_model(model) folds the masks).")
_NO_QUANTIZATION = ("masked layers do not support Keras' quantisation (quantize, a quantised "
                    "dtype policy): Keras' quantised call reads the stored kernel and ignores "
                    "the mask. Quantise the plain ticket instead "
                    "(tf_lottery.export.to_plain_model(model).quantize(mode), or "
                    "export_tflite(..., quantize=...)).")


def lora_or_quantization(layer):
    """Why Keras' LoRA or quantisation keeps `layer` (or a layer inside it) from being masked, as
    one line naming the layer, or None when it uses neither."""
    for sub in compat.sublayers(layer, include_self=True):
        if getattr(sub, "lora_enabled", False) or getattr(sub, "lora_rank", None):
            return f"layer {sub.name!r} ({type(sub).__name__}) uses LoRA: {_NO_LORA}"
        mode = getattr(sub, "quantization_mode", None)
        if mode:
            return (f"layer {sub.name!r} ({type(sub).__name__}) is quantised ({mode}): "
                    f"{_NO_QUANTIZATION}")
    return None


def refuse_lora_and_quantization(layer):
    """ConfigError when `layer` (or a layer inside it) uses Keras' LoRA or quantisation."""
    reason = lora_or_quantization(layer)
    if reason is not None:
        raise ConfigError(reason)


def _masking_config(layer, config):
    return {**config, "mask_rule": keras.saving.serialize_keras_object(layer.mask_rule),
            "score_initializer": keras.saving.serialize_keras_object(layer.score_initializer)}


def _masking_from_config(config):
    config = dict(config)
    scores = config.get("score_initializer", "kaiming_uniform")
    if isinstance(scores, dict):
        config["score_initializer"] = keras.saving.deserialize_keras_object(scores)
    return config


class MaskedLayerMixin:
    """Mask, scores and rule handling of a masked layer; put it first in the bases, before the
    Keras layer it extends. `masked_weight` names the attribute the parent's call() reads the
    kernel through; the variable itself lives where Keras keeps it, `_kernel` for `kernel`
    (`compat.weight_storage`; a parent's `self.kernel = ...` goes through the setter there)."""

    masked_weight = "kernel"

    def __init__(self, *args, mask_rule=None, score_initializer="kaiming_uniform", **kwargs):
        super().__init__(*args, **kwargs)
        refuse_lora_and_quantization(self)  # lora_rank=..., a quantised dtype policy
        self._init_masking(mask_rule, score_initializer)

    def enable_lora(self, *args, **kwargs):
        """Refused: Keras adds the LoRA term to the stored kernel, outside the mask."""
        raise ConfigError(f"layer {self.name!r} ({type(self).__name__}) is masked: {_NO_LORA}")

    def quantize(self, *args, **kwargs):
        """Refused: Keras' quantised call reads the stored kernel and ignores the mask."""
        raise ConfigError(f"layer {self.name!r} ({type(self).__name__}) is masked: "
                          f"{_NO_QUANTIZATION}")

    def _init_masking(self, mask_rule, score_initializer):
        self.mask_rule = get_rule(mask_rule)
        self.score_initializer = get_score_initializer(score_initializer)
        self._mask_training = None
        self._forward_mask = _ForwardMask()

    def build(self, input_shape):
        super().build(input_shape)
        self._build_mask()

    def _build_mask(self):
        before = {id(variable) for variable in self.variables}
        shape = tuple(self.raw_kernel.shape)
        self.mask = self.add_weight(name="mask", shape=shape, initializer="ones",
                                    trainable=False, aggregation="only_first_replica")
        self.scores = None
        if self.mask_rule.needs_scores:
            self.scores = self.add_weight(name="scores", shape=shape,
                                          initializer=self.score_initializer, trainable=True)
        self.mask_rule.build(self)
        # mask, scores and rule state: what a plain copy of the layer drops (export.plain)
        object.__setattr__(self, "_mask_state",
                           tuple(v for v in self.variables if id(v) not in before))

    @property
    def mask_state(self):
        """The variables masking adds to the layer (mask, scores, rule state)."""
        return self._mask_state

    @property
    def raw_kernel(self):
        """The kernel variable itself (pruned entries may hold any value)."""
        return getattr(self, compat.weight_storage(self.masked_weight))

    def _set_raw_kernel(self, variable):
        setattr(self, compat.weight_storage(self.masked_weight), variable)

    def _effective_kernel(self):
        kernel = self.raw_kernel
        mask = self.effective_mask(self._mask_training)
        if self._forward_mask.recording:
            self._forward_mask.set(self._mask_training, mask)
        apply_mask = getattr(self.mask_rule, "apply_mask", None)  # a rule's own gradient
        effective = (kernel * tf.cast(mask, kernel.dtype) if apply_mask is None
                     else apply_mask(self, kernel, mask))
        probe = getattr(self, "_dense_gradient_probe", None)
        if probe is not None:  # a zero tensor whose gradient is ∂L/∂(θ ⊙ m) (sparsity.engine)
            effective = effective + tf.cast(probe, effective.dtype)
        return effective

    # The parent layers read `self.kernel` in call(): serve the effective kernel under that name.
    kernel = property(_effective_kernel, _set_raw_kernel,
                      doc="The effective kernel θ ⊙ mask that the forward pass uses.")

    def effective_mask(self, training=None):
        """The mask the forward pass multiplies into the kernel (soft for some rules)."""
        return self.mask_rule.mask(self, training=training)

    def forward_mask(self, training=True):
        """The mask tensor of this layer's latest forward pass traced into the current graph
        (a tf.function's, e.g. the training step's) with the same `training`, so that a loss
        term on the mask (continuous sparsification's L1) shares its computation and gradient
        path instead of computing it again; eagerly, or before such a forward pass, the mask
        is computed afresh. Within one graph it is the mask as of that forward pass: use it in
        the same step, not after assigning the scores or the rule's variables."""
        mask = self._forward_mask.get(training)
        return self.effective_mask(training) if mask is None else mask

    def binary_mask(self):
        """The 0/1 ticket mask of this layer under its rule."""
        return self.mask_rule.binary_mask(self)

    def _begin_forward(self, training):
        self._mask_training = training  # read by `kernel` while the parent's call runs
        self._forward_mask.start()

    def _end_forward(self):
        self._mask_training = None
        self._forward_mask.recording = False

    def call(self, inputs, training=None):
        self._begin_forward(training)
        try:
            return super().call(inputs)
        finally:
            self._end_forward()

    def get_config(self):
        return _masking_config(self, super().get_config())

    @classmethod
    def from_config(cls, config):
        return super().from_config(_masking_from_config(config))

    # Save every variable (kernel, bias, mask, scores, rule state), not only kernel and bias as
    # the parent layers do.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)


def _twin(parent, masked_weight="kernel"):
    """The masked twin class of a one-kernel Keras layer class."""
    namespace = {"__doc__": f"keras.layers.{parent.__name__} whose {masked_weight} is "
                            f"multiplied by a mask rule's mask.",
                 "__module__": __name__, "masked_weight": masked_weight}
    if masked_weight != "kernel":
        namespace[masked_weight] = MaskedLayerMixin.kernel
    twin = type(f"Masked{parent.__name__}", (MaskedLayerMixin, parent), namespace)
    return keras.saving.register_keras_serializable(_PACKAGE)(twin)


MaskedDense = _twin(keras.layers.Dense)
MaskedConv1D = _twin(keras.layers.Conv1D)
MaskedConv2D = _twin(keras.layers.Conv2D)
MaskedConv3D = _twin(keras.layers.Conv3D)
MaskedConv1DTranspose = _twin(keras.layers.Conv1DTranspose)
MaskedConv2DTranspose = _twin(keras.layers.Conv2DTranspose)
MaskedConv3DTranspose = _twin(keras.layers.Conv3DTranspose)
MaskedDepthwiseConv1D = _twin(keras.layers.DepthwiseConv1D)
MaskedDepthwiseConv2D = _twin(keras.layers.DepthwiseConv2D)
MaskedEinsumDense = _twin(keras.layers.EinsumDense)
MaskedEmbedding = _twin(keras.layers.Embedding, masked_weight="embeddings")


class WeightMask(MaskedLayerMixin, keras.layers.Layer):
    """The masked layer of one prunable weight of a host layer (`MaskedWeightsHost`): a
    sub-layer of the host named '<host>.<attribute>', holding mask, scores and rule state; its
    `raw_kernel` is the host's variable and its `kernel` the effective one, which the host's
    call() reads through `attribute`. Never called or saved on its own."""

    def __init__(self, host, attribute, mask_rule=None, score_initializer="kaiming_uniform"):
        super().__init__(mask_rule=mask_rule, score_initializer=score_initializer,
                         name=f"{host.name}.{attribute.lstrip('_')}")
        object.__setattr__(self, "_host", weakref.ref(host))  # untracked: no cycle
        self.attribute = attribute

    @property
    def raw_kernel(self):
        return getattr(self._host(), _RAW + self.attribute)

    def build(self, input_shape=None):
        self._build_mask()

    def _set_raw_kernel(self, variable):
        raise AttributeError("a WeightMask's kernel belongs to its host layer")


def _masked_attribute(attribute):
    """A property serving the effective value of a host's masked attribute once its WeightMask
    exists (the raw variable before, e.g. while the host builds)."""
    def get(self):
        child = getattr(self, _CHILD + attribute, None)
        return getattr(self, _RAW + attribute) if child is None else child.kernel

    def put(self, value):
        setattr(self, _RAW + attribute, value)

    return property(get, put, doc=f"The effective (masked) {attribute}.")


class MaskHost:
    """Marks a layer that is not itself a masked layer but holds masked sub-layers (a
    MaskedWeightsHost, MaskedMultiHeadAttention); its Keras class is the first base that is
    neither a MaskHost nor a MaskedLayerMixin (`plain_class`)."""


def plain_class(layer_or_class):
    """The Keras (or user) class a masked layer or host stands for (MaskedDense -> Dense)."""
    cls = layer_or_class if isinstance(layer_or_class, type) else type(layer_or_class)
    return next(c for c in cls.__mro__ if not issubclass(c, (MaskHost, MaskedLayerMixin)))


class MaskedWeightsHost(MaskHost):
    """A layer with one `WeightMask` per name in `masked_weights` (attributes its call() reads
    its prunable weights through); put it first in the bases."""

    masked_weights = ()

    def __init__(self, *args, mask_rule=None, score_initializer="kaiming_uniform", **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_rule = get_rule(mask_rule)
        self.score_initializer = get_score_initializer(score_initializer)

    def build(self, input_shape):
        super().build(input_shape)
        self._attach_weight_masks()

    def _attach_weight_masks(self):
        for attribute in self.masked_weights:
            child = WeightMask(self, attribute, self.mask_rule, self.score_initializer)
            child.build()
            setattr(self, _CHILD + attribute, child)

    def weight_masks(self):
        """The WeightMask sub-layers, in `masked_weights` order."""
        return [getattr(self, _CHILD + attribute) for attribute in self.masked_weights]

    def _masked_call(self, call, args, kwargs):
        children = self.weight_masks() if self.built else []
        for child in children:
            child._begin_forward(kwargs.get("training"))
        try:
            return call(*args, **kwargs)
        finally:
            for child in children:
                child._end_forward()

    def get_config(self):
        return _masking_config(self, super().get_config())

    @classmethod
    def from_config(cls, config):
        return super().from_config(_masking_from_config(config))


def _separable_twin(parent):
    def call(self, inputs, training=None):
        return self._masked_call(super(twin, self).call, (inputs,), {})

    namespace = {"__doc__": f"keras.layers.{parent.__name__} with both kernels masked: "
                            f"WeightMask sub-layers '<name>.depthwise_kernel' and "
                            f"'<name>.pointwise_kernel'.",
                 "__module__": __name__, "call": call,
                 "masked_weights": ("depthwise_kernel", "pointwise_kernel"),
                 "depthwise_kernel": _masked_attribute("depthwise_kernel"),
                 "pointwise_kernel": _masked_attribute("pointwise_kernel")}
    twin = type(f"Masked{parent.__name__}", (MaskedWeightsHost, parent), namespace)
    return keras.saving.register_keras_serializable(_PACKAGE)(twin)


MaskedSeparableConv1D = _separable_twin(keras.layers.SeparableConv1D)
MaskedSeparableConv2D = _separable_twin(keras.layers.SeparableConv2D)

_HOST_CLASSES = {}


def host_class(cls, attributes):
    """The MaskedWeightsHost subclass of a user's layer class `cls` masking `attributes`
    (made once per class and attributes; not registered for `.keras` loading)."""
    key = (cls, tuple(attributes))
    if key not in _HOST_CLASSES:
        def call(self, *args, **kwargs):
            return self._masked_call(super(host, self).call, args, kwargs)

        namespace = {"__module__": cls.__module__, "call": call,
                     "masked_weights": tuple(attributes),
                     **{attribute: _masked_attribute(attribute) for attribute in attributes}}
        host = type(f"Masked{cls.__name__}", (MaskedWeightsHost, cls), namespace)
        _HOST_CLASSES[key] = host
    return _HOST_CLASSES[key]


@keras.saving.register_keras_serializable(_PACKAGE)
class MaskedMultiHeadAttention(MaskHost, keras.layers.MultiHeadAttention):
    """keras.layers.MultiHeadAttention whose four EinsumDense projections are MaskedEinsumDense
    named '<name>.query', '<name>.key', '<name>.value' and '<name>.attention_output'."""

    _PROJECTIONS = ("query_dense", "key_dense", "value_dense", "output_dense")  # public properties

    def __init__(self, *args, mask_rule=None, score_initializer="kaiming_uniform", **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_rule = get_rule(mask_rule)
        self.score_initializer = get_score_initializer(score_initializer)

    def build(self, *args, **kwargs):
        super().build(*args, **kwargs)
        self._mask_projections()

    def _mask_projections(self):
        for attribute in self._PROJECTIONS:
            projection = getattr(self, attribute)
            if type(projection) is keras.layers.EinsumDense:
                to_twin(projection, MaskedEinsumDense, self.mask_rule, self.score_initializer)
                projection.name = f"{self.name}.{projection.name}"

    def get_config(self):
        return _masking_config(self, super().get_config())

    @classmethod
    def from_config(cls, config):
        return super().from_config(_masking_from_config(config))


def _move_to(layer, attribute, storage):
    """Move an instance attribute's value to `storage` (a class property takes the name)."""
    if attribute in layer.__dict__:
        object.__setattr__(layer, storage, layer.__dict__.pop(attribute))


def to_twin(layer, twin, rule=None, score_initializer="kaiming_uniform"):
    """Turn a built Keras layer *in place* into its masked twin (or a host class): same object,
    same variables, class changed, masks (all ones) and rule state added.

    Args:
      layer: a built layer of exactly the twin's Keras class (or, for a host class from
        `host_class`, of the class it extends).
      twin: a MaskedLayerMixin twin, a MaskedWeightsHost subclass or MaskedMultiHeadAttention.
      rule, score_initializer: as for the twin's constructor.
    """
    if isinstance(layer, (MaskedLayerMixin, MaskHost)):
        return layer
    refuse_lora_and_quantization(layer)
    if issubclass(twin, MaskedLayerMixin):
        _move_to(layer, twin.masked_weight, compat.weight_storage(twin.masked_weight))
    elif issubclass(twin, MaskedWeightsHost):
        for attribute in twin.masked_weights:
            _move_to(layer, attribute, _RAW + attribute)
            if not hasattr(layer, _RAW + attribute):
                raise ConfigError(f"layer {layer.name!r} has no attribute {attribute!r} to "
                                  f"mask")
    layer.__class__ = twin
    compat.refresh_call_signature(layer)
    with compat.unlocked(layer):
        if issubclass(twin, MaskedLayerMixin):
            layer._init_masking(rule, score_initializer)
            layer._build_mask()
        else:
            layer.mask_rule = get_rule(rule)
            layer.score_initializer = get_score_initializer(score_initializer)
            if issubclass(twin, MaskedWeightsHost):
                layer._attach_weight_masks()
            else:
                layer._mask_projections()
    return layer


MASKED_TWINS = {parent: twin for twin in (
    MaskedDense, MaskedConv1D, MaskedConv2D, MaskedConv3D, MaskedConv1DTranspose,
    MaskedConv2DTranspose, MaskedConv3DTranspose, MaskedDepthwiseConv1D, MaskedDepthwiseConv2D,
    MaskedEinsumDense, MaskedEmbedding, MaskedSeparableConv1D, MaskedSeparableConv2D,
    MaskedMultiHeadAttention) for parent in (plain_class(twin),)}
"""{Keras layer class: its masked class}; exact classes only (a subclass may compute something
else). One-kernel twins are MaskedLayerMixin subclasses; the others are MaskHosts."""


def masked_layers(model):
    """Every masked layer of a model (nested models and hosts' sub-layers included), in a
    stable order."""
    layers = compat.sublayers(model, include_self=True)
    return [layer for layer in layers if isinstance(layer, MaskedLayerMixin)]


def mask_state_ids(model):
    """ids of the variables masking adds to the masked layers of `model` (a network or a
    layer): their masks, scores and mask-rule state (MaskedLayerMixin.mask_state). What every
    selection of a network's dense variables leaves out (dense_variables, SynFlow's |θ|, the
    ticket file's ticket_variables)."""
    return {id(variable) for layer in masked_layers(model) for variable in layer.mask_state}


def dense_variables(model):
    """The weights of `model` (a network or a layer), in `model.weights` order, without the
    masks, scores and mask-rule state: kernels, biases, normalisation parameters and
    statistics, what a plain copy of the model holds."""
    state, seen, variables = mask_state_ids(model), set(), []
    for variable in model.weights:
        if id(variable) not in state and id(variable) not in seen:
            seen.add(id(variable))
            variables.append(variable)
    return variables


class PrunableLayer:
    """The protocol by which a user's own layer names its prunable weights (the name and method
    of tfmot.sparsity.keras.PrunableLayer): subclass it next to keras.layers.Layer, or simply
    define the method, and implement

        def get_prunable_weights(self):
            return [self.w]          # variables of this layer, read in call() as self.w

    `sparsify` then masks each returned weight in place: the layer's class becomes a
    MaskedWeightsHost subclass whose attribute (here `w`) serves θ ⊙ mask to call(), and a
    WeightMask sub-layer named '<layer>.<attribute>' holds each mask. Every weight must be a
    variable the layer keeps in an attribute of its own and reads through it in call(); a
    layer so masked is saved with `save_weights` (its class is not registered for `.keras`)."""

    def get_prunable_weights(self):
        """The layer's prunable variables (kernels; not biases or normalisation weights)."""
        raise NotImplementedError("a PrunableLayer must implement get_prunable_weights()")


def prunable_attributes(layer):
    """The attribute names through which a layer with `get_prunable_weights()` holds its
    prunable weights; ConfigError naming the weight when one is not held in an attribute."""
    attributes = []
    for weight in layer.get_prunable_weights():
        found = [name for name, value in vars(layer).items() if value is weight]
        if not found:
            raise ConfigError(f"layer {layer.name!r}: prunable weight {weight.path!r} is not "
                              f"an attribute of the layer (keep it as self.<name> and read it "
                              f"so in call())")
        attributes.append(found[0])
    return attributes


def mask_custom_layer(layer, rule=None, score_initializer="kaiming_uniform"):
    """Mask the weights a built layer's `get_prunable_weights()` names, in place."""
    twin = host_class(type(layer), prunable_attributes(layer))
    return to_twin(layer, twin, rule, score_initializer)
