"""Your own Keras model as the `model_fn` of an Experiment (the contract in experiment.py): each
network a search asks for is a sparsify()-ed copy of it, with what the search needs applied."""
import inspect

import keras

from tf_lottery import masks as masks_lib
from tf_lottery.errors import ConfigError
from tf_lottery.layers.initializers import DepthwiseInitializer
from tf_lottery.layers.initializers import score_initializer as score_initializer_of
from tf_lottery.models.sparsify import copyable, sparsify
from tf_lottery.models.zoo import per_layer_initializer


class KerasModelFn:
    """A model_fn made of a Keras model you built: every call returns a fresh masked copy.

    What a search asks for is applied to the copy (see Experiment for the arguments):
    `mask_rule` and `score_initializer` go to `sparsify`; a `kernel_initializer` re-draws the
    kernels of the masked layers (IMP: Kaiming normal; edge-popup: the signed Kaiming
    constant a strong ticket needs) and scores are re-drawn per layer (seed + layer index, as
    the zoo draws them), recorded in the layers' configs so that a strong ticket
    file regenerates them from its seed. `affine` (edge-popup's affine_batchnorm) needs nothing
    here: the search freezes batch norm's γ/β unless it is asked to train them.

    Args:
      model: a built Sequential or functional Keras model whose output is logits (no softmax:
        the searches train with from_logits=True; it is copied, never changed), or a function
        of no arguments returning one, e.g. `lambda: MyModel()` for a subclassed model (called
        for every network a search builds; the fresh model is masked in place).
    """

    def __init__(self, model):
        if not isinstance(model, keras.Model) and not callable(model):
            raise ConfigError(f"a model must be a Keras model or a function returning one, got "
                              f"{type(model).__name__}")
        self.model = model

    def _keras_model(self, input_shape):
        model = self.model if isinstance(self.model, keras.Model) else self.model()
        if not isinstance(model, keras.Model):
            raise ConfigError(f"the model function returned {type(model).__name__}, not a "
                              f"Keras model")
        if not model.built:
            model(keras.ops.zeros((1, *input_shape)))
        return model

    def __call__(self, input_shape, num_classes, mask_rule=None, kernel_initializer=None,
                 score_initializer="kaiming_uniform", affine=None, **options):
        if options:
            raise ConfigError(f"a Keras model takes no model options, got {sorted(options)} "
                              f"(a search's model_kwargs are for zoo models: build_model)")
        model = self._keras_model(tuple(input_shape))
        _check_fits(model, tuple(input_shape), int(num_classes))
        if isinstance(self.model, keras.Model):  # copied, never changed
            if not copyable(model):
                raise ConfigError(
                    f"the subclassed model {model.name!r} ({type(model).__name__}) cannot be "
                    f"copied, and a search builds its network more than once: pass a function "
                    f"that builds it, e.g. model=lambda: {type(model).__name__}(...)")
            network = sparsify(model, rule=mask_rule, score_initializer=score_initializer,
                               in_place=False)
        else:  # a fresh model from the function: masked in place if it cannot be copied
            network = sparsify(model, rule=mask_rule, score_initializer=score_initializer)
        if kernel_initializer is not None:
            reinitialise_kernels(network, kernel_initializer)
        reinitialise_scores(network, score_initializer)
        return network


def reinitialise_kernels(network, initializer):
    """Draw the kernel of every masked layer of `network` from `initializer` (a Keras
    initializer; seeded: seed + layer index, as the zoo; depthwise kernels with PyTorch's fan,
    DepthwiseInitializer) and record it in the layer's config, as if the layer had been built
    with it (so that a strong ticket file regenerates the kernels from the seed)."""
    for index, layer in enumerate(masks_lib.masked_layers(network), start=1):
        layer_init = per_layer_initializer(initializer, index)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            layer_init = layer.depthwise_initializer = DepthwiseInitializer(layer_init)
        else:
            layer.kernel_initializer = layer_init
        layer.raw_kernel.assign(layer_init(tuple(layer.raw_kernel.shape),
                                           dtype=layer.raw_kernel.dtype))


def reinitialise_scores(network, initializer):
    """Draw the scores of every masked layer that has them from a per-layer copy of
    `initializer` (seed + layer index), recorded in the layer's config."""
    for index, layer in enumerate(masks_lib.masked_layers(network), start=1):
        if layer.scores is not None:
            layer.score_initializer = per_layer_initializer(
                score_initializer_of(initializer), index)
            layer.scores.assign(layer.score_initializer(tuple(layer.scores.shape),
                                                        dtype=layer.scores.dtype))


def _check_fits(model, input_shape, num_classes):
    """One ConfigError when the model does not take the data's examples or give its classes."""
    try:
        model_input = tuple(model.inputs[0].shape[1:])
        outputs = model.outputs
    except (AttributeError, ValueError, IndexError):  # a subclassed model has no symbolic inputs
        return
    if len(model_input) != len(input_shape) or any(
            m is not None and m != d for m, d in zip(model_input, input_shape)):
        raise ConfigError(f"the model takes inputs of shape {model_input}, the data's examples "
                          f"have shape {input_shape}")
    if len(outputs) != 1 or outputs[0].shape[-1] != num_classes:
        raise ConfigError(f"the model's output has shape {[tuple(o.shape) for o in outputs]}, "
                          f"the data has {num_classes} classes: end in Dense({num_classes})")
    last = model.layers[-1] if model.layers else None
    activation = getattr(last, "activation", None)
    if isinstance(last, keras.layers.Softmax) or getattr(activation, "__name__", "") == "softmax":
        raise ConfigError(f"the model's last layer {last.name!r} applies softmax; the searches "
                          f"train on logits (from_logits=True): drop the activation")


def takes_shape_arguments(function):
    """Whether `function` is a model_fn in the Experiment sense (takes `input_shape`), as
    opposed to a function of no arguments returning a Keras model."""
    try:
        return "input_shape" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
