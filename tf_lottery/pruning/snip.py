"""SNIP: single-shot pruning by connection sensitivity on one batch."""
import gin
import numpy as np

from tf_lottery.pruning.gradients import fixed_mask_layers, kernel_gradients
from tf_lottery.pruning.selection import current_masks, masks_from_scores


def snip_scores(model, x, y, loss_fn=None, exclude=(), training=False):
    """{name: |g ⊙ w|}, g = ∂L/∂w of the batch loss at the effective weights w = θ ⊙ m."""
    layers = fixed_mask_layers(model, exclude, "SNIP")
    grads = kernel_gradients(model, layers, x, y, loss_fn, training)
    return {layer.name: np.abs(grad.numpy() * (layer.raw_kernel.numpy() * layer.mask.numpy()))
            for layer, grad in zip(layers, grads)}


@gin.configurable
def snip_masks(model, x, y, prune_fraction, loss_fn=None, scope="global", exclude=(),
               training=False):
    """SNIP (Lee et al. 2019, connection sensitivity s_j ∝ |∂L/∂c_j| = |g_j·w_j|):
    keep the top-κ, i.e. remove the round-half-up(prune_fraction·remaining) unpruned weights of
    smallest |g ⊙ w|, ranked over all layers (scope='global', as in the paper) or per layer.

    The paper's normalisation by Σ_k|g_k w_k| does not change the ranking and is left out.
    `training` is passed to the model call (False: BatchNorm uses its moving statistics and
    dropout is off, as the Synaptic-Flow reference code does with model.eval()).

    Args:
      model: a masked network (or SparseModel); only weights its masks keep are candidates.
      x, y: one batch of inputs and integer labels the criterion scores on.
      loss_fn: the loss (default: sparse categorical cross-entropy on logits).
      prune_fraction: the fraction of the remaining weights to remove.
      scope: 'global' (rank all layers together) or 'layerwise'.
      exclude: masked layers never pruned, by name or pattern (masks.excluded_names).
    Returns: {layer name: 0/1 float32 mask}, to `set_masks`.
    """
    scores = snip_scores(model, x, y, loss_fn, exclude, training)
    layers = fixed_mask_layers(model, exclude, "SNIP")
    return masks_from_scores(scores, current_masks(layers), prune_fraction, scope)
