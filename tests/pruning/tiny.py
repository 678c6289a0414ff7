"""Tiny masked models whose pruning scores can be computed by hand or brute force."""
import keras
import numpy as np

from tf_lottery.layers import MaskedConv2D, MaskedDense


def dense_net(widths, input_dim, use_bias=False, activation=None, names=None):
    """Sequential of MaskedDense layers (named d0, d1, ... unless `names`)."""
    names = names or [f"d{i}" for i in range(len(widths))]
    layers = [MaskedDense(w, use_bias=use_bias, activation=activation if i < len(widths) - 1
                          else None, name=n) for i, (w, n) in enumerate(zip(widths, names))]
    return keras.Sequential([keras.Input((input_dim,))] + layers)


def conv_net(batch_norm=False):
    """conv (3x3, 2 filters) [-> BN] -> relu -> flatten -> dense 5 -> dense 3 (output)."""
    layers = [keras.Input((4, 4, 1)), MaskedConv2D(2, 3, name="conv")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers += [keras.layers.ReLU(), keras.layers.Flatten(), MaskedDense(5, name="fc"),
               MaskedDense(3, name="out")]
    return keras.Sequential(layers)


def set_kernel(model, name, kernel, mask=None):
    layer = model.get_layer(name)
    layer.raw_kernel.assign(np.asarray(kernel, dtype=np.float32))
    if mask is not None:
        layer.mask.assign(np.asarray(mask, dtype=np.float32))
    return layer
