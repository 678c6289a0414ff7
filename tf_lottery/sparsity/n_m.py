"""N:M fine-grained structured sparsity: at most N non-zeros in every group of M consecutive
weights along a kernel's input dimension (2:4 is what NVIDIA Ampere and later GPUs accelerate).

Grouping convention: groups run along `axis`, by default -2, the kernel's second-to-last axis,
which in Keras's (..., in, out) layout is the input dimension: a Dense kernel (in, out) is cut
into groups of M consecutive rows within each column; a Conv1D/2D/3D kernel (..., in, out) into
groups of M consecutive input channels at each spatial tap and output channel (NVIDIA ASP's and
tfmot's layout, which group along the input channels of the (out, kh, kw, in) TFLite layout;
jaxpruner's NByM takes an `axis`, default -1, and rejects a length M does not divide). For a
Conv*Transpose kernel (..., out, in) pass axis=-1.

Remainder rule: when M does not divide the length L of `axis`, the last group of each line
holds the r = L mod M remaining weights and keeps its min(N, r) largest, as if the line were
zero-padded to a multiple of M (tfmot's generate_m_by_n_mask pads the same way); such a layer
still has at most N non-zeros in every group a padded hardware layout would form.

Selection: the N largest |w| of each group, ties to the earlier position along `axis` (the tie
rule of `magnitude`), computed by counting, for each weight, the weights of its group that beat
it: pure, static-shaped graph code without a sort (M² comparisons per group; M is small).

* n_m_mask(weights, n, m): the one-shot magnitude mask;
* is_n_m_sparse(kernel, n, m): the checker;
* NMMagnitudePruning: the engine's updater (one-shot at `begin_step`, tfmot's sparsity_m_by_n);
* NMMask: a mask rule recomputing the mask of the raw kernel at every forward pass, trained by
  STE or SR-STE (Zhou et al. 2021); `import tf_lottery` registers it for loading .keras
  files.
"""
import numbers

import keras
import numpy as np
import tensorflow as tf

from tf_lottery.errors import ConfigError
from tf_lottery.layers.mask_rules import MaskRule
from tf_lottery.sparsity.engine import MaskUpdater

_PACKAGE = "tf_lottery"


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_n_m(n, m):
    """(n, m) as ints with 1 <= n <= m, ConfigError naming the argument otherwise."""
    n, m = _check_int("n", n, 1), _check_int("m", m, 1)
    if n > m:
        raise ConfigError(f"n must be <= m (at most n non-zeros in every group of m), "
                          f"got n={n}, m={m}")
    return n, m


def _check_axis(axis, rank):
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) \
            or not -rank <= axis < rank:
        raise ConfigError(f"axis must be an integer in [{-rank}, {rank}) for a kernel of rank "
                          f"{rank}, got {axis!r}")
    return int(axis) % rank


def _n_m_keep(scores, n, m, axis):
    """0/1 float32 tensor: the n highest scores of each group of m along `axis` (ties to the
    earlier position). Scores are >= 0; an entry scored -1 is never kept before a scored one."""
    scores = tf.convert_to_tensor(scores, tf.float32)
    rank = scores.shape.rank
    axis = _check_axis(axis, rank)
    length = scores.shape[axis]
    perm = [d for d in range(rank) if d != axis] + [axis]
    lines = tf.transpose(scores, perm)  # (..., length)
    pad = -length % m
    padded = tf.pad(lines, [[0, 0]] * (rank - 1) + [[0, pad]], constant_values=-2.0)
    lead = tf.shape(lines)[:-1]
    groups = tf.reshape(padded, tf.concat([lead, [(length + pad) // m, m]], 0))
    mine, other = groups[..., :, None], groups[..., None, :]
    earlier = tf.range(m)[None, :] < tf.range(m)[:, None]  # [i, j]: j comes before i
    beats = (other > mine) | ((other == mine) & earlier)
    keep = tf.reduce_sum(tf.cast(beats, tf.int32), axis=-1) < n
    keep = tf.reshape(keep, tf.concat([lead, [length + pad]], 0))[..., :length]
    return tf.transpose(tf.cast(keep, tf.float32), np.argsort(perm))


def n_m_mask(weights, n, m, axis=-2):
    """Magnitude N:M mask (Mishra et al. 2021, NVIDIA ASP; Zhou et al. 2021): 1 at the n largest
    |w| of every group of m consecutive weights along `axis`, ties to the earlier position.

    Args:
      weights: a kernel (tensor, variable or array) of rank >= 2 (rank >= 1 with axis=-1).
      n: weights kept per group, 1 <= n <= m.
      m: group size.
      axis: the axis groups run along; -2, the input dimension of Dense and ConvND kernels.
    Returns:
      a 0/1 tensor shaped like `weights`, of its dtype (float32 for integer weights). A last
      partial group of r < m weights keeps min(n, r) of them (see the module docstring).
    """
    n, m = check_n_m(n, m)
    weights = tf.convert_to_tensor(weights)
    if weights.shape.rank is None or weights.shape.rank < 1:
        raise ConfigError(f"weights must have rank >= 1, got shape {weights.shape}")
    dtype = weights.dtype if weights.dtype.is_floating else tf.float32
    keep = _n_m_keep(tf.abs(tf.cast(weights, tf.float32)), n, m, axis)
    return tf.cast(keep, dtype)


def is_n_m_sparse(kernel, n, m, axis=-2):
    """True iff every group of m consecutive entries of `kernel` along `axis` (the last partial
    group included) holds at most n non-zeros.

    Args:
      kernel: a tensor, variable or array (an effective kernel θ ⊙ m, or a mask).
      n, m, axis: as in `n_m_mask`.
    Returns:
      a Python bool.
    """
    n, m = check_n_m(n, m)
    values = np.asarray(keras.ops.convert_to_numpy(kernel))
    if values.ndim < 1:
        raise ConfigError(f"kernel must have rank >= 1, got shape {values.shape}")
    axis = _check_axis(axis, values.ndim)
    lines = np.moveaxis(values != 0, axis, -1)
    length = lines.shape[-1]
    pad = -length % m
    padded = np.pad(lines, [(0, 0)] * (lines.ndim - 1) + [(0, pad)])
    groups = padded.reshape(lines.shape[:-1] + ((length + pad) // m, m))
    return bool(np.all(groups.sum(axis=-1) <= n))


def _allowed_scores(kernel, mask):
    """|θ| where the layer's mask allows an edge, -1 (never chosen first) where it does not."""
    magnitude = tf.abs(tf.cast(kernel, tf.float32))
    return tf.where(tf.cast(mask, tf.float32) > 0, magnitude, -1.0)


class NMMagnitudePruning(MaskUpdater):
    """Prune every masked layer to magnitude N:M once, at training step `begin_step` (the
    begin_step-th batch; tfmot's sparsity_m_by_n prunes at step 1), then keep the masks; the
    weights the layer's mask already removed stay removed (the groups rank the remaining |θ|).
    Mishra et al. 2021 (NVIDIA ASP): one-shot 2:4 magnitude pruning, then fine-tuning.

    Args:
      n, m: at most n non-zeros in every group of m (see `n_m_mask`).
      begin_step: the step (>= 1) whose batch first trains with the N:M masks.
      axis: the kernel axis groups run along (-2: Dense's and ConvND's input dimension).
      exclude: names (or wildcard patterns) of masked layers to leave alone.
    """

    def __init__(self, n, m, begin_step=1, axis=-2, exclude=()):
        super().__init__(exclude)
        self.n, self.m = check_n_m(n, m)
        self.begin_step = _check_int("begin_step", begin_step, 1)
        self.axis = axis

    def build(self, model):
        super().build(model)
        for layer in self.layers:
            rank = len(layer.mask.shape)
            try:
                _check_axis(self.axis, rank)
            except ConfigError as error:
                raise ConfigError(f"{type(self).__name__}: layer {layer.name!r}: {error}; "
                                  f"exclude it") from None

    def is_update_step(self, step):
        return tf.equal(tf.cast(step, tf.int64), self.begin_step)

    def new_masks(self, step, dense_gradients=None):
        return {layer.name: _n_m_keep(_allowed_scores(layer.raw_kernel, layer.mask), self.n,
                                      self.m, self.axis) * tf.cast(layer.mask, tf.float32)
                for layer in self.layers}


@keras.saving.register_keras_serializable(_PACKAGE)
class NMMask(MaskRule):
    """N:M mask recomputed from the raw kernel at every forward pass, trained with the straight-
    through estimator and optionally SR-STE (Zhou et al. 2021, Eq. 3-4).

    Forward: W̃ = W ⊙ m(W) with m(W) the magnitude N:M mask of the raw kernel W (restricted to
    the edges the layer's `mask` allows: m = n_m(|W| on allowed edges) ⊙ mask). Backward:
    ∂L/∂W = (∂L/∂W̃ + λ_W·(1 − m) ⊙ W) ⊙ mask: the gradient passes straight through to every
    allowed dense weight (STE, Eq. 3), plus the sparse-refined decay λ_W of the weights the N:M
    mask prunes (SR-STE, Eq. 4; the paper uses λ_W = 2e-4). The ticket (`binary_mask`) is m(W).

    Args:
      n, m: at most n non-zeros in every group of m (see `n_m_mask`).
      sr_ste_lambda: λ_W >= 0; 0 is plain STE.
      axis: the kernel axis groups run along (-2: Dense's and ConvND's input dimension).
    """

    def __init__(self, n=2, m=4, sr_ste_lambda=0.0, axis=-2):
        self.n, self.m = check_n_m(n, m)
        if isinstance(sr_ste_lambda, bool) or not isinstance(sr_ste_lambda, numbers.Real) \
                or not np.isfinite(sr_ste_lambda) or sr_ste_lambda < 0:
            raise ConfigError(f"sr_ste_lambda must be a finite number >= 0, "
                              f"got {sr_ste_lambda!r}")
        self.sr_ste_lambda = float(sr_ste_lambda)
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise ConfigError(f"axis must be an integer, got {axis!r}")
        self.axis = int(axis)

    def build(self, layer):
        _check_axis(self.axis, len(layer.mask.shape))

    def binary_mask(self, layer):
        allowed = tf.convert_to_tensor(layer.mask)
        keep = _n_m_keep(_allowed_scores(tf.convert_to_tensor(layer.raw_kernel), allowed),
                         self.n, self.m, self.axis)
        return tf.cast(keep, allowed.dtype) * allowed

    def mask(self, layer, training=None):
        return tf.stop_gradient(self.binary_mask(layer))

    def apply_mask(self, layer, kernel, mask):
        """W ⊙ m forward; (upstream + λ(1 − m) ⊙ W) ⊙ allowed backward (masked.py calls this
        in place of the plain product)."""
        kernel = tf.convert_to_tensor(kernel)
        mask = tf.cast(mask, kernel.dtype)
        allowed = tf.cast(tf.convert_to_tensor(layer.mask), kernel.dtype)
        decay = tf.cast(self.sr_ste_lambda, kernel.dtype)

        @tf.custom_gradient
        def masked(kernel):
            def grad(upstream):
                return (upstream + decay * (1.0 - mask) * kernel) * allowed
            return kernel * mask, grad

        return masked(kernel)

    def get_config(self):
        return {"n": self.n, "m": self.m, "sr_ste_lambda": self.sr_ste_lambda,
                "axis": self.axis}
