"""sparsify(): a user's own Keras model with its prunable layers masked, same configs and
weights, so that any search can prune it.

What gets masked (`tf_lottery.layers.masked`): layers of exactly the classes in MASKED_TWINS
(Dense, Conv1D/2D/3D and their Transpose, DepthwiseConv1D/2D, SeparableConv1D/2D, EinsumDense,
Embedding, MultiHeadAttention), wherever they sit (inside nested models, inside other layers:
a transformer block's Dense and its attention's projections), and every layer with a
`get_prunable_weights()` method (the PrunableLayer protocol). Other layers whose own weights
include a matrix or larger (a user's layer without the protocol, a subclass of a Keras layer)
stay dense, and one warning names them. A layer to mask that uses Keras' LoRA or quantisation is
refused with a ConfigError before anything changes (masked layers support neither: see
`tf_lottery.layers.masked`); exclude it to leave it dense.
"""
import warnings

import keras

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.layers.mask_rules import get_rule
from tf_lottery.layers.masked import (MASKED_TWINS, MaskedLayerMixin, MaskHost,
                                      lora_or_quantization, mask_custom_layer, masked_layers,
                                      to_twin)

def _exclusion_test(exclude):
    if callable(exclude):
        return exclude, set()
    names = {exclude} if isinstance(exclude, str) else set(exclude)
    return (lambda layer: layer.name in names), names


def _copy_weights(original, clone):
    if type(clone) is MASKED_TWINS.get(type(original)):
        # A twin holds the original's variables (same names) plus mask, scores and rule state.
        targets = {variable.name: variable for variable in clone.weights}
        for variable in original.weights:
            targets[variable.name].assign(variable)
    elif getattr(original, "weights", None):  # an op such as GetItem has none
        clone.set_weights(original.get_weights())


def _own_matrices(layer):
    """The layer's own variables (not its sub-layers') of rank >= 2."""
    return [variable for variable in compat.own_variables(layer) if len(variable.shape) >= 2]


def _maskable(layer):
    """Whether sparsify masks `layer` itself (a masked twin's class or the PrunableLayer
    protocol), rather than looking inside it."""
    return not isinstance(layer, keras.Model) and (
        type(layer) in MASKED_TWINS or callable(getattr(layer, "get_prunable_weights", None)))


def _refuse_lora_and_quantization(layer, is_excluded):
    """ConfigError, before anything changes, when a layer that sparsify would mask inside
    `layer` uses Keras' LoRA or quantisation (masked layers support neither)."""
    for child in compat.sublayers(layer, recursive=False):
        if isinstance(child, (MaskedLayerMixin, MaskHost)) or is_excluded(child):
            continue
        if _maskable(child):
            reason = lora_or_quantization(child)
            if reason is not None:
                raise ConfigError(f"sparsify cannot mask this model: {reason} Or leave "
                                  f"{child.name!r} dense: exclude=[{child.name!r}].")
        else:
            _refuse_lora_and_quantization(child, is_excluded)


def _mask_in_place(layer, rule, score_initializer, is_excluded, dense):
    """Mask `layer` and the layers inside it, in place; append to `dense` the layers left dense
    that hold matrices of their own."""
    if isinstance(layer, (MaskedLayerMixin, MaskHost)) or is_excluded(layer):
        return
    twin = MASKED_TWINS.get(type(layer))
    if _maskable(layer):
        if not layer.built:
            raise ConfigError(f"layer {layer.name!r} is not built: call the model on a batch "
                              f"before sparsify")
        if twin is not None:
            to_twin(layer, twin, rule, score_initializer)
        else:
            mask_custom_layer(layer, rule, score_initializer)
        return
    if _own_matrices(layer):
        dense.append(layer)
    for child in compat.sublayers(layer, recursive=False):
        _mask_in_place(child, rule, score_initializer, is_excluded, dense)


def _check_unique(model):
    names = [layer.name for layer in masked_layers(model)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"masked layers share names {repeated}: masks are named by layer, "
                          f"give these layers unique names")


def copyable(model):
    """Whether `model` is a Sequential or functional model, which sparsify (and strip_pruning,
    export) can rebuild from its config; a subclassed model cannot be copied."""
    return compat.is_graph_model(model)


def sparsify(model, rule=None, exclude=(), score_initializer="kaiming_uniform", in_place=None):
    """`model` with its prunable layers masked (module doc), every mask at ones, so that it gives
    the original's outputs until something prunes it. Layer names are kept, so masks
    ({layer name: array}) name the same layers as the original model; a layer with several
    masked weights has one mask per weight, '<layer>.<attribute>' (SeparableConv2D 'sep' ->
    'sep.depthwise_kernel', 'sep.pointwise_kernel'; MultiHeadAttention 'mha' -> 'mha.query',
    'mha.key', 'mha.value', 'mha.attention_output').

    Sequential and functional models (nested ones too) are copied: top-level layers become
    masked twins built from their configs, with the weights copied, and layers inside other
    layers are then masked in the copy. A subclassed model cannot be copied, so it is changed
    in place: each layer object keeps its variables and gets its masked class and mask variables
    (recompile it afterwards); nothing else of the model changes.

    Args:
      model: a built Keras model (Sequential, functional, nested or subclassed).
      rule: the mask rule of every new masked layer (a MaskRule, a name, see `get_rule`).
      exclude: layer names to leave unmasked (e.g. the classifier), or a predicate on layers.
      score_initializer: initialiser of the scores, for rules that need scores.
      in_place: None (default): copy a Sequential/functional model, change a subclassed one in
        place; True: change any model in place; False: copy, and a ConfigError for a
        subclassed model.
    Returns:
      the masked model (the same object when changed in place).
    """
    graph = compat.is_graph_model(model)
    if in_place is False and not graph:
        raise ConfigError(f"sparsify cannot copy the subclassed model {model.name!r} "
                          f"({type(model).__name__}); pass in_place=True to mask it in place")
    if not model.built:
        raise ConfigError("sparsify needs a built model: give it an Input or call it once")
    rule = get_rule(rule)
    is_excluded, excluded_names = _exclusion_test(exclude)
    unknown = excluded_names - {layer.name for layer in
                                compat.sublayers(model)}
    if unknown:
        raise ConfigError(f"exclude names layers the model does not have: {sorted(unknown)}")
    _refuse_lora_and_quantization(model, is_excluded)
    sparse = model if in_place or not graph else _copy(model, rule, is_excluded,
                                                       score_initializer)
    dense = []
    for layer in compat.sublayers(sparse, recursive=False):
        _mask_in_place(layer, rule, score_initializer, is_excluded, dense)
    _check_unique(sparse)
    if dense:
        warnings.warn(f"sparsify leaves dense the weights of {len(dense)} layer(s) it cannot "
                      f"mask (no masked twin, no get_prunable_weights()): "
                      + ", ".join(f"{layer.name} ({type(layer).__name__})" for layer in dense),
                      stacklevel=2)
    return sparse


def _copy(model, rule, is_excluded, score_initializer):
    pairs = []  # (original, clone): weights are copied once the clone is built

    def clone_layer(layer):
        if isinstance(layer, keras.Model):  # nested Sequential/functional models are recursed into
            raise ConfigError(f"cannot copy the nested subclassed model {layer.name!r}; pass "
                              f"in_place=True to sparsify the model in place")
        twin = MASKED_TWINS.get(type(layer))
        if twin is not None and issubclass(twin, MaskedLayerMixin) and not is_excluded(layer):
            clone = twin.from_config({**layer.get_config(), "mask_rule": rule,
                                      "score_initializer": score_initializer})
        else:  # other twins are made in place in the copy (their weights copy as the plain's)
            clone = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, clone))
        return clone

    sparse = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    for original, clone in pairs:
        _copy_weights(original, clone)
    return sparse
