"""Multiply-adds of a model's unpruned weights for one example: what pruning saves on paper.

What is counted: the MACs of the kernels only, one per non-zero kernel entry of the effective
kernel (θ ⊙ the layer's binary ticket mask for a masked layer, so unstructured, N:M and
thinned kernels alike, and zeros a plain model holds) per position it is applied at:

* Dense: non-zeros × the positions of the output other than the batch and units (1 for a
  (batch, units) output, T for (batch, T, units));
* Conv1D/2D/3D, DepthwiseConv1D/2D: non-zeros × output spatial positions;
* SeparableConv1D/2D: (depthwise non-zeros + pointwise non-zeros) × output spatial positions;
* Conv1D/2D/3DTranspose: non-zeros × *input* spatial positions (each input value meets the
  whole kernel).

Biases, BatchNorm, activations, pooling and element-wise additions are not counted. Layers with
weights of other kinds (EinsumDense, MultiHeadAttention, Embedding lookups, user layers) are
listed under 'skipped', not guessed. Shapes come from the model's built graph (`layer.output`,
`layer.input`): a Sequential or functional model (or a SparseModel around one); a subclassed
model whose layers have no symbolic output is a ConfigError.
"""
import keras
import numpy as np

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.layers.masked import (MaskedLayerMixin, MaskedWeightsHost, WeightMask,
                                      plain_class)

_SPATIAL = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
            keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
              keras.layers.Conv3DTranspose)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


def _kernel_counts(layer, attribute, masks):
    """(non-zero entries, entries) of the effective binary-masked kernel `attribute`."""
    masked = layer if isinstance(layer, MaskedLayerMixin) else None
    if masked is None and isinstance(layer, MaskedWeightsHost):
        masked = next((c for c in layer.weight_masks()
                       if c.attribute.lstrip("_") == attribute), None)
    if masked is not None:
        kernel = masked.raw_kernel
        mask = masks[masked.name] if masked.name in masks else masked.binary_mask()
    else:
        kernel, mask = getattr(layer, attribute), None
    values = keras.ops.convert_to_numpy(kernel)
    if mask is not None:
        values = values * keras.ops.convert_to_numpy(mask)
    return int(np.count_nonzero(values)), int(values.size)


def _positions(layer, shape, channels_first):
    spatial = shape[2:] if channels_first else shape[1:-1]
    if any(d is None for d in spatial):
        raise ConfigError(f"flops: layer {layer.name!r} has an unknown spatial size {shape}; "
                          f"build the model on an input of fixed size")
    return int(np.prod(spatial, dtype=np.int64))


def _shape(layer, which):
    try:
        return tuple(getattr(layer, which).shape)
    except (AttributeError, ValueError):
        raise ConfigError(f"flops needs the model's built {which} shapes, which layer "
                          f"{layer.name!r} lacks (a Sequential or functional model built on a "
                          f"keras.Input, not a subclassed one)") from None


def _layer_macs(layer, masks):
    """(kind, macs, dense_macs) or None for a layer whose MACs are not counted."""
    if isinstance(layer, _SEPARABLE):
        parts = ["depthwise_kernel", "pointwise_kernel"]
        which = "output"
    elif isinstance(layer, _TRANSPOSE):
        parts, which = ["kernel"], "input"
    elif isinstance(layer, _SPATIAL + (keras.layers.Dense,)):
        parts, which = ["kernel"], "output"
    else:
        return None
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    positions = _positions(layer, _shape(layer, which), channels_first)
    counts = [_kernel_counts(layer, part, masks) for part in parts]
    return (plain_class(layer).__name__, positions * sum(nonzero for nonzero, _ in counts),
            positions * sum(size for _, size in counts))


def flops(model, masks=None):
    """Multiply-adds (MACs) of the unpruned kernel weights for one example, per layer and in
    total (see the module docstring for what is counted).

    Args:
      model: a built Sequential or functional Keras model, masked or not, or a SparseModel.
      masks: {masked layer name: 0/1 mask} to count instead of the layers' binary masks (a
        search's ticket); layers it does not name use their own.
    Returns:
      {'layers': {layer name: {'type', 'macs', 'dense_macs', 'density'}}, 'total_macs',
      'dense_total_macs', 'density' (total_macs / dense_total_macs; 1.0 for no counted
      layer), 'skipped': [names of layers with weights that are not counted]}; 'dense_macs'
      counts every kernel entry, 'macs' the non-zero ones of the effective kernel.
    """
    from tf_lottery.export.plain import network_of

    network, masks = network_of(model), dict(masks or {})
    if not isinstance(network, keras.Model):
        raise ConfigError(f"flops needs a Keras model, got {type(model).__name__}")
    layers, skipped = {}, []
    for layer in compat.sublayers(network):
        if isinstance(layer, (keras.Model, WeightMask)):
            continue  # nested models (their layers come next) and hosts' WeightMask children
        counted = _layer_macs(layer, masks)
        if counted is None:
            if layer.weights and not isinstance(layer, keras.layers.BatchNormalization):
                skipped.append(layer.name)
            continue
        kind, macs, dense = counted
        layers[layer.name] = {"type": kind, "macs": macs, "dense_macs": dense,
                              "density": macs / dense if dense else 1.0}
    total = sum(entry["macs"] for entry in layers.values())
    dense_total = sum(entry["dense_macs"] for entry in layers.values())
    return {"layers": layers, "total_macs": total, "dense_total_macs": dense_total,
            "density": total / dense_total if dense_total else 1.0, "skipped": skipped}


def flops_metrics(model, masks=None):
    """{'macs', 'dense_macs', 'macs_fraction'} of `flops(model, masks)` for a round's metrics,
    or {} when the model's shapes are not available (a subclassed model)."""
    try:
        counted = flops(model, masks)
    except ConfigError:
        return {}
    return {"macs": counted["total_macs"], "dense_macs": counted["dense_total_macs"],
            "macs_fraction": counted["density"]}
