"""What the measurements share: which variables are a model's weights (and which entries of them
a mask keeps), how data arrives, which loss is differentiated, and how side effects are undone."""
import contextlib

import keras
import numpy as np
import tensorflow as tf

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.layers.masked import MaskedLayerMixin


def kernel_layers(model):
    """Layers holding a kernel, in a stable order: masked layers and plain layers whose `kernel`
    is a variable (Dense, Conv, DepthwiseConv, ...), nested models included."""
    layers = compat.sublayers(model, include_self=True)
    return [layer for layer in layers
            if isinstance(layer, MaskedLayerMixin)
            or isinstance(getattr(layer, "kernel", None), keras.Variable)]


def kernel_variable(layer):
    """The kernel variable itself (for a masked layer its raw kernel, not the effective one)."""
    return layer.raw_kernel if isinstance(layer, MaskedLayerMixin) else layer.kernel


def kernel_arrays(model, effective=False):
    """{layer name: kernel} for every kernel layer; `effective` gives masked layers' kernels as the
    forward pass sees them (raw kernel ⊙ mask), otherwise their raw kernels."""
    return {layer.name: np.asarray(layer.kernel if effective else kernel_variable(layer))
            for layer in kernel_layers(model)}


def weight_parameters(model, masks=None, include_biases=False):
    """[(variable, 0/1 mask tensor or None)] of the weights a measurement runs over.

    Every kernel layer contributes its kernel variable (masked layers: the raw kernel), restricted
    to masks[name] if given, else to the layer's binary ticket mask for a masked layer, else
    unrestricted. `include_biases` adds each kernel layer's bias (never masked).
    """
    masks = masks or {}
    layers = kernel_layers(model)
    unknown = sorted(set(masks) - {layer.name for layer in layers})
    if unknown:
        raise ConfigError(f"masks name layers without a kernel in the model: {unknown[:5]}")
    params = []
    for layer in layers:
        variable = kernel_variable(layer)
        if layer.name in masks:
            mask = masks[layer.name]
        elif isinstance(layer, MaskedLayerMixin):
            mask = layer.binary_mask()
        else:
            mask = None
        if mask is not None:
            mask = tf.cast(tf.convert_to_tensor(mask), variable.dtype)
            if tuple(mask.shape) != tuple(variable.shape):
                raise ConfigError(f"mask for {layer.name} has shape {tuple(mask.shape)}, "
                                  f"its kernel {tuple(variable.shape)}")
        params.append((variable, mask))
        if include_biases and getattr(layer, "bias", None) is not None:
            params.append((layer.bias, None))
    return params


def watchable(params):
    """The tf.Variables under the Keras variables of `params`: what a GradientTape watches (and
    differentiates with respect to) even when a variable is not trainable."""
    return [variable.value for variable, _ in params]


def project(tensors, masks):
    """Each tensor times its mask (unchanged where the mask is None)."""
    return [t if m is None else t * m for t, m in zip(tensors, masks)]


def loss_function(model, loss_fn):
    """A callable (y_true, y_pred) -> scalar: `loss_fn`, or else the loss the model was compiled
    with (Model.compute_loss, which adds the model's own regularisation losses)."""
    if loss_fn is not None:
        return loss_fn
    if getattr(model, "loss", None) is None:  # Trainer.compile sets it with its loss
        raise ConfigError("pass loss_fn=, or compile the model with a loss first")

    def compiled_loss(y_true, y_pred):
        return model.compute_loss(y=y_true, y_pred=y_pred, training=False)

    return compiled_loss


def _is_tensor_like(value):
    return isinstance(value, (np.ndarray, tf.Tensor, tf.Variable)) or keras.ops.is_tensor(value)


def input_batches(data):
    """Inputs of `data`: one batch (an array, or an (x, y[, w]) tuple), or an iterable of such
    batches (a list, a tf.data.Dataset)."""
    if _is_tensor_like(data):
        return [data]
    if isinstance(data, tuple):
        return [data[0]]
    return [batch[0] if isinstance(batch, tuple) else batch for batch in data]


def labelled_batches(data):
    """(x, y) pairs of `data`: one (x, y[, w]) tuple, or an iterable of such tuples."""
    if isinstance(data, tuple) and data and _is_tensor_like(data[0]):
        return [(data[0], data[1])]
    batches = [(batch[0], batch[1]) for batch in data]
    if not batches:
        raise ConfigError("no (x, y) batch in the data given")
    return batches


@contextlib.contextmanager
def preserved_state(model):
    """Restore every non-trainable variable of `model` on exit, so that forward passes in training
    mode (BatchNorm moving statistics, ever-selected masks) leave no trace."""
    saved = [(v, np.array(v.numpy())) for v in model.non_trainable_variables]
    try:
        yield
    finally:
        for variable, value in saved:
            variable.assign(value)
