"""Put ToST ghost modules into a functional Keras model, and take them out again.

`insert_ghosts` rebuilds the model's graph with the SAME layer objects (same variables, masks and
all), replacing every ReLU activation layer by a `GhostActivation` and adding a `GhostSkip`
around every 3x3 conv block "conv -> [BN] -> [Add] -> activation": the block's input, projected,
is added to the block's output just before the activation (ToST §2.2, Fig. 4: "add input of each
(3 × 3) convolution block, to their output before the activation"; in a ResNet basic block the
second conv's skip joins after the native residual addition, as in Fig. 4).

`remove_ghosts` rebuilds the graph without them (ReLU layers back, skips gone) and again shares
every other layer, so the weights are the trained ones. Once the ghosts have faded (ReLU switched
on, α = 0) both models give bit-identical outputs.

Only standalone activation layers are seen: `keras.layers.ReLU()` (plain) and
`keras.layers.Activation('relu')`. A ReLU fused into a layer (`Conv2D(..., activation='relu')`)
is neither replaced nor used as a block end. Sequential models are converted to functional ones.
"""
import gin
import keras

from tf_lottery import compat
from tf_lottery.errors import ConfigError, check_choice
from tf_lottery.layers.ghosts import SMOOTH_KINDS, GhostActivation, GhostSkip

_PASS_THROUGH = (keras.layers.BatchNormalization,)


def is_plain_relu(layer):
    """True for a standalone layer that computes exactly max(x, 0)."""
    if isinstance(layer, keras.layers.ReLU):
        config = layer.get_config()
        return (config.get("max_value") is None and not config.get("negative_slope")
                and not config.get("threshold"))
    if isinstance(layer, keras.layers.Activation):
        return layer.get_config().get("activation") == "relu"
    return False


def _is_activation(layer):
    return isinstance(layer, (keras.layers.Activation, keras.layers.ReLU, keras.layers.ELU,
                              keras.layers.LeakyReLU, keras.layers.PReLU, keras.layers.Softmax,
                              GhostActivation))


def _is_3x3_conv(layer):
    return (isinstance(layer, keras.layers.Conv2D)
            and tuple(layer.kernel_size) == (3, 3) and layer.data_format == "channels_last")


def _as_functional(model):
    if isinstance(model, keras.Sequential):
        if not model.built:
            raise ConfigError("build the Sequential model (give it an input shape) before "
                              "inserting ghosts")
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not isinstance(model, compat.functional_class()):
        raise ConfigError(f"ghost insertion needs a functional or sequential Keras model, got "
                          f"{type(model).__name__}")
    return model


def _same_inputs(model):
    """Fresh Input tensors named like the model's input layers (clone_model renames them)."""
    return keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype,
                              name=compat.input_layer_name(t)), model.input)


def _rebuild(model, call_function):
    model = _as_functional(model)
    return keras.models.clone_model(model, input_tensors=_same_inputs(model),
                                    clone_function=lambda layer: layer,
                                    call_function=call_function)


@gin.configurable
def insert_ghosts(model, activations=True, skips=True, kind="swish", initial_beta=1.0,
                  initial_alpha=1.0):
    """A new functional model with ghost neurons/skips, sharing every layer of `model`.

    Args:
      model: a functional (or built Sequential) Keras model.
      activations: replace each plain ReLU layer by a `GhostActivation` ("GSw").
      skips: add a `GhostSkip` around each 3x3 conv block that ends in an activation ("GSk").
      kind: 'swish' or 'mish' for the ghost neurons.
      initial_beta: β of the ghost neurons before a schedule sets it.
      initial_alpha: α of the ghost skips before a schedule sets it.
    """
    check_choice("kind", kind, SMOOTH_KINDS)
    # Tensors of the new graph that end a 3x3 conv block not yet closed by an activation,
    # mapped to [(block input tensor, conv layer), ...].
    open_blocks = {}

    def call_function(layer, *args, **kwargs):
        if _is_activation(layer) and args:
            x = args[0]
            if skips:
                for block_input, conv in open_blocks.get(id(x), []):
                    x = GhostSkip(initial_alpha=initial_alpha, strides=conv.strides,
                                  name=f"{conv.name}_ghost_skip")([block_input, x])
            if activations and is_plain_relu(layer):
                ghost = GhostActivation(kind=kind, initial_beta=initial_beta,
                                        replaced_layer=keras.saving.serialize_keras_object(layer),
                                        name=f"{layer.name}_ghost")
                return ghost(x)
            return layer(x, *args[1:], **kwargs)
        outputs = layer(*args, **kwargs)
        if not isinstance(outputs, keras.KerasTensor):
            return outputs
        if _is_3x3_conv(layer) and args:
            open_blocks[id(outputs)] = [(args[0], layer)]
        elif isinstance(layer, _PASS_THROUGH) and args and id(args[0]) in open_blocks:
            open_blocks[id(outputs)] = open_blocks[id(args[0])]
        elif isinstance(layer, keras.layers.Add) and args:
            joined = [block for x in args[0] for block in open_blocks.get(id(x), [])]
            if joined:
                open_blocks[id(outputs)] = joined
        return outputs

    return _rebuild(model, call_function)


def _restored_activation(ghost):
    if ghost.replaced_layer is None:
        return keras.layers.ReLU(name=ghost.name.removesuffix("_ghost"))
    return keras.saving.deserialize_keras_object(ghost.replaced_layer)


def remove_ghosts(model):
    """A new functional model without ghost modules (ReLUs back), sharing every other layer."""

    def call_function(layer, *args, **kwargs):
        if isinstance(layer, GhostSkip):
            return args[0][1]
        if isinstance(layer, GhostActivation):
            return _restored_activation(layer)(*args, **kwargs)
        return layer(*args, **kwargs)

    return _rebuild(model, call_function)
