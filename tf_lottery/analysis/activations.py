"""Activation sparsity (ToST, Jaiswal et al., Table A1 / "Training your sparse neural network
better with any mask", Table 1): per ReLU, the fraction of its outputs that are exactly zero over
a batch.

A ReLU is a keras.layers.ReLU layer or any layer whose `activation` is relu (Dense/Conv with
activation="relu", Activation("relu")); `layer_filter` selects other layers instead.
"""
import contextlib

import keras
import numpy as np

from tf_lottery import compat
from tf_lottery.analysis._common import input_batches
from tf_lottery.errors import ConfigError


def is_relu(layer):
    """Whether `layer` ends in a ReLU."""
    return (isinstance(layer, keras.layers.ReLU)
            or getattr(layer, "activation", None) is keras.activations.relu)


def zero_fraction(array):
    """Fraction of exactly-zero entries of one array."""
    array = np.asarray(array)
    return float(np.mean(array == 0)) if array.size else 0.0


def zero_fractions(activations):
    """{name: fraction of exact zeros} of plain activation arrays {name: array}."""
    return {name: zero_fraction(a) for name, a in activations.items()}


@contextlib.contextmanager
def _counting_outputs(layers, counts):
    """Wrap each layer's `call` so that its outputs add [zeros, entries] to counts[name]."""
    for layer in layers:
        call = layer.call

        def counting_call(*args, _call=call, _name=layer.name, **kwargs):
            outputs = _call(*args, **kwargs)
            values = np.asarray(outputs)
            counts[_name][0] += int(np.count_nonzero(values == 0))
            counts[_name][1] += values.size
            return outputs

        layer.call = counting_call
    try:
        yield
    finally:
        for layer in layers:
            del layer.call


def activation_zero_counts(model, data, layer_filter=is_relu):
    """{layer name: (exact zeros, entries)} of each selected layer's outputs over `data` (one
    batch: an array or an (x, y) tuple; or an iterable of batches), in inference mode."""
    layers = [layer for layer in compat.sublayers(model)
              if layer_filter(layer)]
    if not layers:
        raise ConfigError("no layer of the model passes layer_filter (no ReLU?)")
    counts = {layer.name: [0, 0] for layer in layers}
    with _counting_outputs(layers, counts):
        for x in input_batches(data):
            model(x, training=False)
    return {name: (zeros, entries) for name, (zeros, entries) in counts.items()}


def activation_sparsity(model, data, layer_filter=is_relu):
    """{layer name: fraction of its outputs that are exactly zero} over `data`."""
    return {name: zeros / entries if entries else 0.0
            for name, (zeros, entries) in activation_zero_counts(model, data, layer_filter).items()}


def overall_activation_sparsity(counts):
    """Zeros over entries of all layers of `activation_zero_counts` together (every output entry
    counts once, so large layers weigh more than in a mean of per-layer fractions)."""
    zeros = sum(z for z, _ in counts.values())
    entries = sum(n for _, n in counts.values())
    return zeros / entries if entries else 0.0
