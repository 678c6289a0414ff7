"""Magnitude pruning, the pruning step of IMP: remove the unpruned weights of smallest |w|."""
import gin
import numpy as np

from tf_lottery.errors import ConfigError, check_fraction
from tf_lottery.layers.masked import MaskedConv2D, MaskedDense, MaskedDepthwiseConv2D
from tf_lottery.masks import prunable_layers
from tf_lottery.pruning.selection import current_masks, masks_from_scores


@gin.configurable
def magnitude_masks(model, prune_fraction, scope="layerwise", layer_prune_fractions=None,
                    exclude=()):
    """IMP's pruning step (Savarese et al. 2020, Algorithm 1 line 3): set m_i = 0 for the active
    weights (m_i = 1) with the smallest magnitudes |w_i|.

    Scores are |raw kernel|; only weights the layer's current `mask` keeps compete, so pruned
    weights stay pruned. `scope='layerwise'` removes round-half-up(p·remaining) in each layer,
    p = layer_prune_fractions.get(name, prune_fraction) (see `frankle_carbin_fractions`);
    `scope='global'` removes round-half-up(prune_fraction·remaining) of all remaining weights
    ranked together across layers. Returns masks of prunable_layers(model, exclude) only.
    """
    layers = prunable_layers(model, exclude)
    scores = {layer.name: np.abs(layer.raw_kernel.numpy()) for layer in layers}
    return masks_from_scores(scores, current_masks(layers), prune_fraction, scope,
                             layer_prune_fractions)


@gin.configurable
def frankle_carbin_fractions(model, dense=0.2, conv=0.15, output_layer_name=None,
                             output_factor=0.5, exclude=()):
    """Per-layer prune fractions of Frankle & Carbin (2019): `dense` for fully-connected layers,
    `conv` for (depthwise) convolutions, and the output layer at output_factor times its type's
    fraction (20% / 15% / 10% by default). The output layer is `output_layer_name`, or the last
    prunable layer when None."""
    layers = prunable_layers(model, exclude)
    if not layers:
        return {}
    dense = check_fraction("dense", dense)
    conv = check_fraction("conv", conv)
    fractions = {}
    for layer in layers:
        if isinstance(layer, MaskedDense):
            fractions[layer.name] = dense
        elif isinstance(layer, (MaskedConv2D, MaskedDepthwiseConv2D)):
            fractions[layer.name] = conv
        else:
            raise ConfigError(f"no Frankle & Carbin fraction for layer type "
                              f"{type(layer).__name__} ({layer.name})")
    output = layers[-1].name if output_layer_name is None else output_layer_name
    if output not in fractions:
        raise ConfigError(f"output_layer_name {output!r} is not a prunable layer; "
                          f"choose one of {sorted(fractions)}")
    fractions[output] = check_fraction("output prune fraction", fractions[output] * output_factor)
    return fractions
