"""A ticket as a plain Keras model: masks folded into kernels, scores and rules dropped, faded
ghost modules removed, so that nothing of tf_lottery is needed to run or load it.

`to_plain_model` copies a functional or sequential network (nested models included): every
masked layer or host becomes its Keras (or user) class (`MaskedDense` -> `Dense`,
`MaskedSeparableConv2D` -> `SeparableConv2D`, `MaskedMultiHeadAttention` -> `MultiHeadAttention`,
`plain_class`) holding each masked weight as θ ⊙ m with m the rule's 0/1 ticket mask
(`layer.binary_mask()`), every other layer a copy with the same weights. The copy shares no
variable with the trained model.
"""
import keras

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.layers.ghosts import GhostActivation, GhostSkip, ghost_modules
from tf_lottery.layers.initializers import KaimingNormal, KaimingUniform
from tf_lottery.layers.masked import MaskedLayerMixin, dense_variables, plain_class
from tf_lottery.training.ghost_insertion import remove_ghosts


def network_of(model):
    """The network inside a SparseModel (anything with `.network`), else the model itself."""
    network = getattr(model, "network", None)
    return network if isinstance(network, keras.Model) else model


def check_ghosts_faded(network):
    """Raise ConfigError naming every ghost module that has not faded (ReLU off, α != 0)."""
    activations, skips = ghost_modules(network)
    active = [layer.name for layer in activations
              if not bool(keras.ops.convert_to_numpy(layer.relu))]
    active += [layer.name for layer in skips
               if float(keras.ops.convert_to_numpy(layer.alpha)) != 0.0]
    if active:
        raise ConfigError(f"cannot export: ghost modules have not faded (GhostActivation not yet "
                          f"switched to ReLU, or GhostSkip with alpha != 0): {', '.join(active)}; "
                          f"finish the ghost schedules first")


def fold(kernel, mask):
    """θ ⊙ m of numpy arrays, every pruned entry +0.0 (a negative θ times 0 is -0.0, whose sign
    bit would make the zeros of an export compress worse: a 90%-sparse kernel gzips about 30%
    larger)."""
    folded = kernel * mask.astype(kernel.dtype)
    folded[folded == 0] = 0
    return folded


def folded_kernel(layer):
    """θ ⊙ m: the raw kernel times the layer's 0/1 ticket mask (numpy; see `fold`)."""
    return fold(keras.ops.convert_to_numpy(layer.raw_kernel),
                keras.ops.convert_to_numpy(layer.binary_mask()))


def _keras_initializer(config):
    """A Keras initialiser config standing for a tf_lottery one (kept weights need none, but a
    plain model must load without tf_lottery): Kaiming normal/uniform become the VarianceScaling
    of the same distribution (σ² = gain² / (fan · density)); anything else He normal."""
    initializer = keras.saving.deserialize_keras_object(config)
    if isinstance(initializer, (KaimingNormal, KaimingUniform)):
        replacement = keras.initializers.VarianceScaling(
            scale=initializer.gain ** 2 / initializer.density, mode=initializer.mode,
            distribution="uniform" if isinstance(initializer, KaimingUniform)
            else "untruncated_normal", seed=initializer.seed)
    else:
        replacement = keras.initializers.VarianceScaling(scale=2.0, mode="fan_in",
                                                         distribution="untruncated_normal")
    return keras.saving.serialize_keras_object(replacement)


def _is_tf_lottery_object(value):
    return isinstance(value, dict) and str(value.get("registered_name")).startswith("tf_lottery>")


def _plain_config(layer):
    config = layer.get_config()
    config.pop("mask_rule", None)
    config.pop("score_initializer", None)
    for key, value in config.items():
        if key.endswith("_initializer") and _is_tf_lottery_object(value):
            config[key] = _keras_initializer(value)
    return config


def _plain_layer(layer, copies):
    if compat.is_graph_model(layer):
        return _plain_graph(layer, copies)
    if isinstance(layer, keras.Model):
        raise ConfigError(f"cannot export the subclassed model {layer.name!r} "
                          f"({type(layer).__name__}): only functional and sequential models "
                          f"(nested ones too) can be converted to plain Keras layers")
    if isinstance(layer, (GhostActivation, GhostSkip)):  # remove_ghosts has taken them out
        raise ConfigError(f"ghost module {layer.name!r} left in the graph")
    plain = plain_class(layer).from_config(_plain_config(layer))
    copies.append((layer, plain))
    return plain


def _plain_graph(model, copies):
    if not model.built:
        raise ConfigError(f"model {model.name!r} is not built: call it on a batch or give it an "
                          f"input shape before export")
    if any(isinstance(layer, (GhostActivation, GhostSkip)) for layer in model.layers):
        model = remove_ghosts(model)
    return keras.models.clone_model(model, clone_function=lambda layer: _plain_layer(layer, copies))


def _copy_weights(layer, plain):
    """The plain layer takes the masked one's weights minus mask state (mask, scores, rule
    variables), each masked weight folded: the remaining order is the plain layer's."""
    masked = [m for m in compat.sublayers(layer, include_self=True)
              if isinstance(m, MaskedLayerMixin)]
    if not masked:
        plain.set_weights(layer.get_weights())
        return
    folded = {id(m.raw_kernel): m for m in masked}
    values = [folded_kernel(folded[id(v)]) if id(v) in folded else keras.ops.convert_to_numpy(v)
              for v in dense_variables(layer)]
    plain.set_weights(values)


def to_plain_model(model):
    """A plain Keras copy of a ticket: masks folded (θ ⊙ m), scores and rules dropped, faded
    ghosts removed (GhostActivation -> its ReLU, GhostSkip -> gone).

    Args:
      model: a functional or sequential Keras network built of masked layers (nested models
        allowed), or a SparseModel around one.
    Raises:
      ConfigError: a ghost module has not faded, the model is subclassed or not built.
    """
    network = network_of(model)
    if not compat.is_graph_model(network):
        raise ConfigError(f"cannot export a {type(network).__name__}: only functional and "
                          f"sequential Keras models (or a SparseModel around one) are supported")
    check_ghosts_faded(network)
    copies = []
    plain = _plain_graph(network, copies)
    for layer, plain_layer in copies:
        _copy_weights(layer, plain_layer)
    return plain
