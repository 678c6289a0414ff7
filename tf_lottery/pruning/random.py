"""Random pruning: uniform per layer, and random re-pruning with a given mask's layer densities."""
import gin
import numpy as np

from tf_lottery.masks import prunable_layers
from tf_lottery.pruning.selection import current_masks, masks_from_scores


@gin.configurable
def random_masks(model, prune_fraction, seed=0, exclude=()):
    """Random pruning (Su et al. 2020; Frankle et al. 2020, as used by ToST, Jaiswal et al. 2022,
    Sec. 1): remove
    round-half-up(prune_fraction·remaining) of each layer's unpruned weights, chosen uniformly
    at random (seeded; pruned weights stay pruned).

    Args:
      model: a masked network (or SparseModel); only weights its masks keep are candidates.
      prune_fraction: the fraction of the remaining weights to remove.
      seed: seeds the choice.
      exclude: masked layers never pruned, by name or pattern (masks.excluded_names).
    Returns: {layer name: 0/1 float32 mask}, to `set_masks`.
    """
    layers = prunable_layers(model, exclude)
    rng = np.random.default_rng(seed)
    scores = {layer.name: rng.random(tuple(layer.mask.shape)) for layer in layers}
    return masks_from_scores(scores, current_masks(layers), prune_fraction, "layerwise")


def random_masks_like(masks, seed=0):
    """Random re-pruning control, the layer-wise shuffle of Frankle et al. 2020b (cited in
    Maene et al., Understanding IMP, Sec. 5): per layer, a uniformly random 0/1 mask with exactly
    as many ones as masks[name] has, placed anywhere in the kernel."""
    rng = np.random.default_rng(seed)
    result = {}
    for name, mask in masks.items():
        mask = np.asarray(mask)
        kept = int(np.sum(mask != 0))
        flat = np.zeros(mask.size, dtype=np.float32)
        flat[rng.permutation(mask.size)[:kept]] = 1.0
        result[name] = flat.reshape(mask.shape)
    return result
