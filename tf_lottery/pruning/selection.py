"""Turn per-layer scores into masks: remove the lowest-scored weights among those still unpruned.

Every criterion computes scores {layer name: array shaped like the kernel} and hands them here,
so the counting, rounding and tie rules are the same for all of them:

* only weights whose current mask is 1 compete; a pruned weight stays pruned whatever its score;
* removed = round-half-up(prune_fraction · remaining), see `prune_count`: per layer
  (scope='layerwise') or once over the weights remaining in all layers pooled (scope='global');
* ties: among equal scores the weight later in (layer order, C-order position in the kernel)
  is removed first, so the earlier one is kept, as in `top_k_mask`.
"""
import math

import numpy as np

from tf_lottery.errors import ConfigError, TrainingError, check_choice, check_fraction

SCOPES = ("layerwise", "global")


def check_scope(scope):
    return check_choice("scope", scope, SCOPES)


def prune_count(prune_fraction, remaining):
    """Weights removed out of `remaining`: ⌊p·n + ½⌋ (round half up), with p·n first rounded to
    6 decimals so floating-point noise (0.35·10 = 3.4999999999999996) cannot change the count."""
    return int(math.floor(round(prune_fraction * remaining, 6) + 0.5))


def current_masks(layers):
    """{name: the layer's stored 0/1 `mask` as float32 numpy} for the given masked layers."""
    return {layer.name: np.asarray(layer.mask.numpy(), dtype=np.float32) for layer in layers}


def remove_lowest(scores, masks, n_remove):
    """New masks with the `n_remove` lowest-scored unpruned weights (pooled over every layer in
    `scores`) set to 0; ties remove the later position first."""
    names = list(scores)
    flat_scores = np.concatenate([np.ravel(np.asarray(scores[n], dtype=np.float64))
                                  for n in names])
    flat_masks = np.concatenate([np.ravel(masks[n]) for n in names]).astype(np.float32)
    alive = np.flatnonzero(flat_masks > 0)
    if not 0 <= n_remove <= alive.size:
        raise ConfigError(f"cannot remove {n_remove} of {alive.size} remaining weights")
    if not np.all(np.isfinite(flat_scores[alive])):
        raise TrainingError(f"non-finite pruning scores in {names}; the model or batch gives "
                            "NaN/inf (diverged weights, or overflow)")
    # lexsort: last key is primary. Ascending score, then descending position.
    order = np.lexsort((-alive, flat_scores[alive]))
    flat_masks[alive[order[:n_remove]]] = 0.0
    new, start = {}, 0
    for name in names:
        size = np.size(masks[name])
        new[name] = flat_masks[start:start + size].reshape(np.shape(masks[name]))
        start += size
    return new


def masks_from_scores(scores, masks, prune_fraction, scope="layerwise",
                      layer_prune_fractions=None):
    """Remove the lowest-scored unpruned weights: round-half-up(p·remaining) per layer
    ('layerwise', p from `layer_prune_fractions` where given) or over all layers ('global')."""
    check_scope(scope)
    prune_fraction = check_fraction("prune_fraction", prune_fraction)
    layer_prune_fractions = dict(layer_prune_fractions or {})
    unknown = sorted(set(layer_prune_fractions) - set(scores))
    if unknown:
        raise ConfigError(f"layer_prune_fractions names layers that are not pruned: {unknown}")
    if scope == "global":
        if layer_prune_fractions:
            raise ConfigError("layer_prune_fractions needs scope='layerwise'")
        remaining = sum(int(np.sum(masks[n])) for n in scores)
        return remove_lowest(scores, masks, prune_count(prune_fraction, remaining))
    new = {}
    for name in scores:
        fraction = check_fraction(f"layer_prune_fractions[{name!r}]",
                                  layer_prune_fractions.get(name, prune_fraction))
        n_remove = prune_count(fraction, int(np.sum(masks[name])))
        new.update(remove_lowest({name: scores[name]}, {name: masks[name]}, n_remove))
    return new
