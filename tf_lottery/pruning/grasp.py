"""GraSP: prune the weights whose removal least reduces (or most increases) gradient flow."""
import gin
import tensorflow as tf

from tf_lottery.pruning.gradients import batch_loss, fixed_mask_layers, watch_kernels
from tf_lottery.pruning.selection import current_masks, masks_from_scores


def hessian_gradient_product(model, layers, x, y, loss_fn=None, training=False):
    """[H g per layer] by double backprop: g = ∂L/∂θ, Hg = ∂(stop_gradient(g)·g)/∂θ.

    Taken w.r.t. the raw kernels of FixedMask layers this is M H M (M g): the Hessian-gradient
    product of the sub-network restricted to the unpruned weights (see `gradients`), zero on
    pruned ones.
    """
    kernels = [layer.raw_kernel for layer in layers]
    zero = tf.UnconnectedGradients.ZERO
    with tf.GradientTape() as outer:
        watch_kernels(outer, layers)
        with tf.GradientTape() as inner:
            watch_kernels(inner, layers)
            loss = batch_loss(model, x, y, loss_fn, training)
        grads = inner.gradient(loss, kernels, unconnected_gradients=zero)
        flow = tf.add_n([tf.reduce_sum(tf.stop_gradient(g) * g) for g in grads])
    return outer.gradient(flow, kernels, unconnected_gradients=zero)


def grasp_scores(model, x, y, loss_fn=None, exclude=(), training=False):
    """{name: S(-θ) = -θ ⊙ Hg} at the effective weights θ ⊙ m (zero on pruned weights)."""
    layers = fixed_mask_layers(model, exclude, "GraSP")
    products = hessian_gradient_product(model, layers, x, y, loss_fn, training)
    return {layer.name: -(layer.raw_kernel.numpy() * layer.mask.numpy()) * hg.numpy()
            for layer, hg in zip(layers, products)}


@gin.configurable
def grasp_masks(model, x, y, prune_fraction, loss_fn=None, scope="global", exclude=(),
                training=False):
    """GraSP (Wang et al. 2020, Sec. 4): S(-θ) = -θ ⊙ Hg; remove the weights with the HIGHEST
    scores (removing them reduces the gradient norm gᵀg least, or increases it), i.e. the
    round-half-up(prune_fraction·remaining) unpruned weights of largest S, over all layers
    (scope='global', as in the paper) or per layer.

    Args:
      model: a masked network (or SparseModel); only weights its masks keep are candidates.
      x, y: one batch of inputs and integer labels the criterion scores on.
      loss_fn: the loss (default: sparse categorical cross-entropy on logits).
      prune_fraction: the fraction of the remaining weights to remove.
      scope: 'global' (rank all layers together) or 'layerwise'.
      exclude: masked layers never pruned, by name or pattern (masks.excluded_names).
    Returns: {layer name: 0/1 float32 mask}, to `set_masks`.

    Sign convention as in the authors' code (alecwangcq/GraSP: scores = -θ·Hg, keep
    score <= the threshold of the top removed). g and H come from the same batch (x, y).
    The authors divide logits by a temperature T = 200 before the loss; pass e.g.
    loss_fn=lambda y, z: sparse_categorical_loss(y, z / 200) to reproduce that.
    """
    scores = grasp_scores(model, x, y, loss_fn, exclude, training)
    layers = fixed_mask_layers(model, exclude, "GraSP")
    # masks_from_scores removes the lowest, so rank by -S to remove the highest S.
    lowest_first = {name: -score for name, score in scores.items()}
    return masks_from_scores(lowest_first, current_masks(layers), prune_fraction, scope)
