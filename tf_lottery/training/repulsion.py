"""Repulsion / attraction loss (Maene et al., "Towards Understanding Iterative Magnitude Pruning:
Why Lottery Tickets Win", Sec. 3): during an IMP round, push the weights away from (λ_r > 0) or
towards (λ_r < 0) the optima Θ of all previous rounds,

    J_r(θ) = λ_r / |Θ| · Σ_{θ_r ∈ Θ} ( (θ⊙m)·(θ_r⊙m) / (‖θ⊙m‖₂ ‖θ_r⊙m‖₂) )²

(the displayed equation of Sec. 3; the paper does not number its equations). m is the mask of the
current sparse network, applied to both vectors, so θ_r enters only on the weights the current
round still has. θ is the vector of all pruned weights, every kernel flattened and concatenated
into one vector (one cosine per previous optimum, not one per layer): "only weights are pruned"
(Appendix A.3), so biases and batch-norm parameters have no mask and do not enter. The paper
repels with λ_r = 2 and attracts with λ_r = −1 (Fig. 3), and repels from *all* previous optima:
repelling from the last one only lets IMP go back to the one before (Sec. 3.1, Fig. 17).
"""
import numpy as np
import tensorflow as tf

from tf_lottery.errors import ConfigError

REPULSION = "repulsion"  # the regulariser's name in SparseModel (and its logged metric)


def squared_cosines(kernels, masks, optima):
    """cos²(θ⊙m, θ_r⊙m) for every optimum r, as a tensor of shape (|Θ|,).

    kernels: one tensor θ_l per layer; masks: the 0/1 m_l of the same shapes; optima: per layer a
    tensor of shape (|Θ|, *θ_l.shape) stacking that layer's kernel in every optimum. The vectors
    are all layers together. A zero vector has cosine 0 (no NaN, zero gradient).
    """
    dots = squared_norm = optimum_squared_norms = 0.0
    for kernel, mask, stacked in zip(kernels, masks, optima):
        mask = tf.reshape(tf.cast(mask, kernel.dtype), [-1])
        current = tf.reshape(kernel, [-1]) * mask
        previous = tf.reshape(tf.cast(stacked, kernel.dtype), [tf.shape(stacked)[0], -1]) * mask
        dots += tf.linalg.matvec(previous, current)
        squared_norm += tf.reduce_sum(tf.square(current))
        optimum_squared_norms += tf.reduce_sum(tf.square(previous), axis=1)
    return tf.math.divide_no_nan(tf.square(dots), squared_norm * optimum_squared_norms)


def repulsion_loss(kernels, masks, optima, strength):
    """J_r = λ_r / |Θ| · Σ_r cos²(θ⊙m, θ_r⊙m) (Maene et al., Sec. 3); see `squared_cosines`."""
    return strength * tf.reduce_mean(squared_cosines(kernels, masks, optima))


class RepulsionLoss:
    """J_r for `SparseModel.add_regularizer(REPULSION, RepulsionLoss(...))`.

    Args:
      layers: the pruned masked layers (θ: their raw kernels; m: their 0/1 ticket masks, read at
        every step).
      optima: the previous optima Θ, a list of {layer name: kernel array}, one per round.
      strength: λ_r (2 repels, −1 attracts, as in the paper).
    """

    def __init__(self, layers, optima, strength):
        if not optima:
            raise ConfigError("RepulsionLoss needs at least one previous optimum")
        self.layers = list(layers)
        self.strength = float(strength)
        # One (|Θ|, *kernel shape) constant per layer: captured by the traced step as an input,
        # not copied into the graph, and not part of the model's checkpoints.
        self.optima = [tf.constant(np.stack([np.asarray(optimum[layer.name], np.float32)
                                             for optimum in optima]))
                       for layer in self.layers]

    def squared_cosines(self):
        return squared_cosines(self._kernels(), self._masks(), self.optima)

    def __call__(self, model=None):
        return repulsion_loss(self._kernels(), self._masks(), self.optima, self.strength)

    def _kernels(self):
        return [tf.convert_to_tensor(layer.raw_kernel) for layer in self.layers]

    def _masks(self):
        return [layer.binary_mask() for layer in self.layers]
