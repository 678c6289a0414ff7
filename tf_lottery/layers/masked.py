"""Masked Keras layers: the only place where a mask touches a kernel.

`MaskedDense`, `MaskedConv2D` and `MaskedDepthwiseConv2D` subclass the Keras layers they
replace, take the same arguments (plus `mask_rule` and `score_initializer`), hold the same
weights, and add

* `mask`: a non-trainable 0/1 variable shaped like the kernel (pruned weights have mask 0);
* `scores`: a trainable variable, only when the mask rule needs one;
* whatever the rule keeps (`keep_fraction`, `beta`, `ever_selected`).

`layer.kernel` is the *effective* kernel θ ⊙ rule.mask(...) used by the forward pass, so
gradients reach the raw weights (`layer.raw_kernel`) only through the mask: a pruned weight gets
a gradient of exactly zero and its effective value stays exactly zero whatever the optimizer
does to the raw value (momentum, weight decay).
"""
import keras
import tensorflow as tf

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


class MaskedLayerMixin:
    """Mask, scores and rule handling shared by the masked layers; put it first in the bases,
    before the Keras layer it extends."""

    def __init__(self, *args, mask_rule=None, score_initializer="kaiming_uniform", **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_rule = get_rule(mask_rule)
        self.score_initializer = get_score_initializer(score_initializer)
        self._mask_training = None
        self._forward_mask = _ForwardMask()

    def build(self, input_shape):
        super().build(input_shape)
        shape = tuple(self.raw_kernel.shape)
        self.mask = self.add_weight(name="mask", shape=shape, initializer="ones",
                                    trainable=False, aggregation="only_first_replica")
        self.scores = None
        if self.mask_rule.needs_scores:
            self.scores = self.add_weight(name="scores", shape=shape,
                                          initializer=self.score_initializer, trainable=True)
        self.mask_rule.build(self)

    @property
    def raw_kernel(self):
        """The kernel variable itself (pruned entries may hold any value)."""
        return self._kernel

    # The parent layers read `self.kernel` in call(): serve the effective kernel under that name.
    # (DepthwiseConv2D also *assigns* `self.kernel` in build: the setter keeps the variable in
    # `_kernel`, where Dense and Conv keep theirs.)
    @property
    def kernel(self):
        kernel = self._kernel
        mask = self.effective_mask(self._mask_training)
        if self._forward_mask.recording:
            self._forward_mask.set(self._mask_training, mask)
        effective = kernel * tf.cast(mask, kernel.dtype)
        probe = getattr(self, "_dense_gradient_probe", None)
        if probe is not None:  # a zero tensor whose gradient is ∂L/∂(θ ⊙ m) (sparsity.engine)
            effective = effective + tf.cast(probe, effective.dtype)
        return effective

    @kernel.setter
    def kernel(self, variable):
        self._kernel = variable

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

    def call(self, inputs, training=None):
        self._mask_training = training  # read by `kernel` while the parent's call runs
        self._forward_mask.start()
        try:
            return super().call(inputs)
        finally:
            self._mask_training = None
            self._forward_mask.recording = False

    def get_config(self):
        return {**super().get_config(),
                "mask_rule": keras.saving.serialize_keras_object(self.mask_rule),
                "score_initializer": keras.saving.serialize_keras_object(self.score_initializer)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        scores = config.get("score_initializer", "kaiming_uniform")
        if isinstance(scores, dict):
            config["score_initializer"] = keras.saving.deserialize_keras_object(scores)
        return super().from_config(config)

    # Save every variable (kernel, bias, mask, scores, rule state), not only kernel and bias as
    # the parent layers do.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)


@keras.saving.register_keras_serializable(_PACKAGE)
class MaskedDense(MaskedLayerMixin, keras.layers.Dense):
    """keras.layers.Dense whose kernel is multiplied by a mask rule's mask."""


@keras.saving.register_keras_serializable(_PACKAGE)
class MaskedConv2D(MaskedLayerMixin, keras.layers.Conv2D):
    """keras.layers.Conv2D whose kernel is multiplied by a mask rule's mask."""


@keras.saving.register_keras_serializable(_PACKAGE)
class MaskedDepthwiseConv2D(MaskedLayerMixin, keras.layers.DepthwiseConv2D):
    """keras.layers.DepthwiseConv2D whose kernel is multiplied by a mask rule's mask."""


MASKED_TWINS = {keras.layers.Dense: MaskedDense, keras.layers.Conv2D: MaskedConv2D,
                keras.layers.DepthwiseConv2D: MaskedDepthwiseConv2D}


def masked_layers(model):
    """Every masked layer of a model (nested models included), in a stable order."""
    layers = model._flatten_layers(include_self=True, recursive=True)
    return [layer for layer in layers if isinstance(layer, MaskedLayerMixin)]
