"""Mask rules: how a masked layer turns its `mask` (and maybe `scores`) into the mask it applies.

A rule is a small serialisable object chosen by the search procedure, never by the layer. Its
state (scores, temperature, keep fraction) lives in variables of the layer, created by
`rule.build(layer)`, so changing a keep fraction or a temperature between rounds or steps needs
no retracing. Every rule offers

* `mask(layer, training)`: the (possibly soft) mask multiplied into the kernel in the forward
  pass, differentiable where the algorithm needs it;
* `binary_mask(layer)`: the 0/1 ticket mask this rule stands for (what export folds in).
"""
import keras
import tensorflow as tf

from tf_lottery.errors import check_fraction
from tf_lottery.serializable import ConfigSerializable

_PACKAGE = "tf_lottery"


class MaskRule(ConfigSerializable):
    """Base class: subclasses set `needs_scores` and implement `mask`/`binary_mask`."""

    needs_scores = False

    def build(self, layer):
        """Create the rule's variables on `layer` (called once the kernel exists)."""

    def mask(self, layer, training=None):
        raise NotImplementedError

    def binary_mask(self, layer):
        raise NotImplementedError

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(_PACKAGE)
class FixedMask(MaskRule):
    """A fixed 0/1 mask: effective kernel θ ⊙ m (IMP, prune-at-init, ToST; Frankle & Carbin 2019)."""

    def mask(self, layer, training=None):
        return layer.mask

    def binary_mask(self, layer):
        return tf.convert_to_tensor(layer.mask)


def keep_count(keep_fraction, n):
    """Edges kept out of n: k = ⌈keep_fraction·n⌉, with keep_fraction·n first rounded to 6
    decimals so that floating-point noise (0.3·10 = 3.0000000000000004) adds no edge."""
    product = tf.cast(keep_fraction, tf.float64) * tf.cast(n, tf.float64)
    return tf.cast(tf.math.ceil(tf.round(product * 1e6) / 1e6), tf.int32)


_INT32_MIN, _INT32_MAX = -2**31, 2**31 - 1
_SAMPLE_SIZE = 4096  # strided sample whose order statistics give the first two probes


def _order_key(values):
    """int32 keys ordered like the float32 values (IEEE-754 bits, negatives flipped)."""
    bits = tf.bitcast(tf.cast(values, tf.float32), tf.int32)
    return tf.where(bits >= 0, bits, bits ^ tf.constant(0x7FFFFFFF, tf.int32))


def _count_at_least(key, threshold):
    return tf.reduce_sum(tf.cast(key >= tf.cast(threshold, tf.int32), tf.int32))


def _key_value(key):
    """The float value (as float64) whose order key is `key` (inverse of _order_key)."""
    key = tf.cast(key, tf.int32)
    bits = tf.where(key >= 0, key, key ^ tf.constant(0x7FFFFFFF, tf.int32))
    return tf.cast(tf.bitcast(bits, tf.float32), tf.float64)


def _sample_probes(key, k, n):
    """Two keys that likely bracket the k-th largest key: order statistics of a strided sample
    at rank k·m/n ± 3 binomial standard deviations."""
    stride = tf.maximum(n // _SAMPLE_SIZE, 1)
    sample = tf.sort(key[::stride], direction="DESCENDING")
    m = tf.cast(tf.size(sample), tf.float64)
    share = tf.cast(k, tf.float64) / tf.cast(n, tf.float64)
    rank = share * m
    margin = 3.0 * tf.sqrt(m * share * (1.0 - share)) + 2.0
    low = tf.clip_by_value(tf.cast(tf.math.ceil(rank + margin), tf.int32), 1, tf.size(sample))
    high = tf.clip_by_value(tf.cast(tf.math.floor(rank - margin), tf.int32), 1, tf.size(sample))
    return tf.cast(tf.stack([sample[low - 1], sample[high - 1]]), tf.int64)


def _interpolate(lo, hi, share):
    """lo + share·(hi + 1 - lo), linear in the values (smooth across powers of two) when both
    ends are finite numbers, else in the keys."""
    in_keys = lo + tf.cast(tf.round(share * tf.cast(hi + 1 - lo, tf.float64)), tf.int64)
    low, high = _key_value(lo), _key_value(hi + 1)
    finite = tf.math.is_finite(low) & tf.math.is_finite(high)
    value = tf.where(finite, low + share * (high - low), 0.0)
    in_values = tf.cast(_order_key(tf.cast(value, tf.float32)), tf.int64)
    return tf.where(finite, in_values, in_keys)


_BISECT_AFTER = 40  # probes; then plain bisection bounds the worst case


def _kth_largest_key(key, k, n):
    """(t, count(key >= t), count(key > hi)): count(key >= t) == k, or, when ties at the k-th
    largest key make that impossible, t is that key (and count(key > t) the third value).

    A bracketing search on f(t) = count(key >= t) - k, keeping f(lo) >= 0 > f(hi + 1). The
    first two probes are order statistics of a sample; then regula falsi with the Illinois
    rule (the weight of an end that stays put twice is halved), so a smooth distribution needs
    a handful of counting passes; bisection after 40 probes bounds any input by about 75. When
    the bracket is one key short or one key over, a max/min reduction snaps to the k-th key
    (the end game of ties, where no threshold gives exactly k).
    """
    probes = _sample_probes(key, k, n)
    k64 = tf.cast(k, tf.int64)

    def next_probe(i, lo, hi, weight_lo, weight_hi, count_lo, count_above):
        """(probe, lo, hi): a probe, with the bracket snapped to actual keys where known."""
        def interpolated():
            share = weight_lo / (weight_lo + weight_hi)
            chosen = tf.where(i < 2, probes[tf.minimum(i, 1)],
                              tf.where(i < _BISECT_AFTER, _interpolate(lo, hi, share),
                                       lo + (hi - lo + 1) // 2))
            return chosen, lo, hi

        def largest():  # one more key is needed: the largest <= hi is the k-th
            top = tf.reduce_max(tf.where(key <= tf.cast(hi, tf.int32), key, _INT32_MIN))
            top = tf.cast(top, tf.int64)
            return top, lo, top

        def above_smallest():  # one key too many: probe just above the smallest >= lo
            bottom = tf.reduce_min(tf.where(key >= tf.cast(lo, tf.int32), key, _INT32_MAX))
            bottom = tf.minimum(tf.cast(bottom, tf.int64), hi)
            return tf.minimum(bottom + 1, hi), bottom, hi

        return tf.cond((i >= 2) & (k64 - count_above == 1), largest, lambda: tf.cond(
            (i >= 2) & (count_lo - k64 == 1), above_smallest, interpolated))

    def body(i, lo, hi, count_lo, count_above, weight_lo, weight_hi, side):
        chosen, lo, hi = next_probe(i, lo, hi, weight_lo, weight_hi, count_lo, count_above)
        probe = tf.clip_by_value(chosen, lo + 1, hi)
        count = tf.cast(_count_at_least(key, probe), tf.int64)
        enough = count >= k64
        lo, hi = tf.where(enough, probe, lo), tf.where(enough, hi, probe - 1)
        count_lo = tf.where(enough, count, count_lo)
        count_above = tf.where(enough, count_above, count)
        weight_lo = tf.where(enough, tf.cast(count - k64, tf.float64),
                             tf.where(side < 0, weight_lo / 2, weight_lo))
        weight_hi = tf.where(enough, tf.where(side > 0, weight_hi / 2, weight_hi),
                             tf.cast(k64 - count, tf.float64))
        side = tf.where(i < 1, 0, tf.where(enough, 1, -1))
        return i + 1, lo, hi, count_lo, count_above, weight_lo, weight_hi, side

    def searching(i, lo, hi, count_lo, *_):
        return (count_lo != k64) & (lo < hi)

    n64 = tf.cast(n, tf.int64)
    start = (tf.constant(0), tf.constant(_INT32_MIN, tf.int64), tf.constant(_INT32_MAX, tf.int64),
             n64, tf.constant(0, tf.int64), tf.cast(n64 - k64, tf.float64),
             tf.cast(k64, tf.float64), tf.constant(0))
    result = tf.while_loop(searching, body, start, maximum_iterations=_BISECT_AFTER + 40)
    _, lo, _, count_lo, count_above = result[:5]
    return lo, count_lo, count_above


_ROW = 1024  # _first_flags counts in rows of this length


def _first_flags(flags, count):
    """Boolean: the first `count` (int32 scalar) True entries of the 1-D boolean `flags`.

    Equivalent to flags & (cumsum(flags) <= count), but a cumulative sum over a whole layer is
    slow on CPUs: this counts per row, finds the row of the count-th flag from the cumulative
    row totals and its column by sorting that row's flag positions, and compares positions.
    """
    n = tf.size(flags)
    rows = (n + _ROW - 1) // _ROW
    padded = tf.pad(flags, [[0, rows * _ROW - n]])
    grid = tf.reshape(padded, [rows, _ROW])
    per_row = tf.reduce_sum(tf.cast(grid, tf.int32), axis=1)
    before = tf.cumsum(per_row, exclusive=True)
    count = tf.clip_by_value(count, 0, tf.reduce_sum(per_row))
    row = tf.minimum(tf.reduce_sum(tf.cast(before + per_row < count, tf.int32)), rows - 1)
    # that row's flag positions in order (gathers and a sort: a cumulative sum here, or indexing
    # one, takes XLA seconds to compile)
    row_flags = tf.gather(padded, row * _ROW + tf.range(_ROW))
    positions = tf.sort(tf.where(row_flags, tf.range(_ROW), _ROW))
    before_row = tf.reduce_sum(tf.where(tf.range(rows) < row, per_row, 0))
    column = tf.gather(positions, tf.clip_by_value(count - before_row - 1, 0, _ROW - 1))
    # the count-th flag sits at (row, column); none is kept when count is 0
    column = tf.where(count > 0, column, -1)
    row_index, column_index = tf.range(rows)[:, None], tf.range(_ROW)[None, :]
    upto = (row_index < row) | ((row_index == row) & (column_index <= column))
    return tf.reshape(grid & upto, [-1])[:n]


def _top_k_keep(key, k):
    """Boolean: the k largest of the int32 keys (1-D), earlier positions winning ties."""
    n = tf.size(key)
    k = tf.clip_by_value(tf.cast(k, tf.int32), 0, n)
    threshold, count_lo, count_above = _kth_largest_key(key, k, n)
    threshold32 = tf.cast(threshold, tf.int32)

    def split_ties():  # keep the first k - count(key > t) of the keys equal to t
        kept = tf.cast(tf.cast(k, tf.int64) - count_above, tf.int32)
        return (key > threshold32) | _first_flags(key == threshold32, kept)

    return tf.cond(count_lo == tf.cast(k, tf.int64), lambda: key >= threshold32, split_ties)


def top_k_mask(scores, k, allowed=None):
    """0/1 tensor shaped like scores with ones at the k largest entries (of those allowed).

    Exactly k ones; among equal scores the earlier positions win. The k-th largest value is
    found by a counting search on the float bits (`_kth_largest_key`: no sort of the layer), which
    keeps shapes static (XLA-friendly), lets k be a tensor that changes between rounds, and
    needs only a few passes over the scores.
    """
    key = _order_key(tf.reshape(scores, [-1]))
    if allowed is not None:
        key = tf.where(tf.reshape(allowed, [-1]) > 0, key, _INT32_MIN)
    keep = _top_k_keep(key, k)
    return tf.reshape(tf.cast(keep, scores.dtype), tf.shape(scores))


def _straight_through(value, source, gate):
    """`value` in the forward pass (0 wherever gate is 0); the gradient reaches `source` as
    upstream ⊙ gate, i.e. ∂value/∂source = I on the gated edges. The same as
    (value + source - stop_gradient(source)) ⊙ gate, without its three passes over the layer."""
    @tf.custom_gradient
    def forward(source):
        return tf.identity(value), lambda upstream: upstream * gate
    return forward(source)


@keras.saving.register_keras_serializable(_PACKAGE)
class TopKScores(MaskRule):
    """Edge-popup (Ramanujan et al. 2020; soft iEP paper Eq. 1): keep the top keep_fraction of
    |s| per layer, m = h(|s|) with straight-through gradient ∂m/∂|s| = I (so ∂m/∂s = sign(s),
    as edge-popup's GetSubnet applied to scores.abs()); times `mask` (hard iEP).

    `keep_fraction` is the fraction of the edges *allowed by the layer's mask* that is kept
    (all edges while the mask is all ones): k = ⌈keep_fraction·n_allowed⌉, see `keep_count`.
    It lives in the layer variable `keep_fraction`, so a search can change it between cycles.
    The layer variable `ever_selected` is the running OR of every mask used in a training
    forward pass (for the dying ratio, soft iEP paper Eq. 2).
    """

    needs_scores = True

    def __init__(self, keep_fraction=0.5):
        self.keep_fraction = check_fraction("TopKScores.keep_fraction", keep_fraction,
                                            allow_one=True)

    def build(self, layer):
        layer.keep_fraction = layer.add_weight(
            name="keep_fraction", shape=(), dtype="float64", trainable=False,
            initializer=keras.initializers.Constant(self.keep_fraction),
            aggregation="only_first_replica")
        layer.ever_selected = layer.add_weight(
            name="ever_selected", shape=layer.mask.shape, trainable=False, initializer="zeros",
            aggregation="only_first_replica")

    def _hard_mask(self, layer, magnitude, allowed):
        """0/1 at the top k of |s| among the allowed edges (k counts the allowed edges)."""
        edges = allowed.shape.num_elements()
        # 0/1 masks sum exactly in float32 below 2^24 edges
        total = tf.reduce_sum(allowed if edges is not None and edges < 2**24
                              else tf.cast(allowed, tf.float64))
        k = keep_count(layer.keep_fraction, total)
        # |s| >= 0, so its float bits already order like its values; -1 ranks below them all
        key = tf.bitcast(tf.reshape(tf.cast(magnitude, tf.float32), [-1]), tf.int32)
        key = tf.where(tf.reshape(allowed, [-1]) > 0, key, -1)
        return tf.reshape(tf.cast(_top_k_keep(key, k), magnitude.dtype), tf.shape(magnitude))

    def binary_mask(self, layer):
        magnitude = tf.abs(tf.convert_to_tensor(layer.scores))
        allowed = tf.cast(tf.convert_to_tensor(layer.mask), magnitude.dtype)
        return self._hard_mask(layer, magnitude, allowed) * allowed

    def mask(self, layer, training=None):
        magnitude = tf.abs(tf.convert_to_tensor(layer.scores))
        allowed = tf.cast(tf.convert_to_tensor(layer.mask), magnitude.dtype)
        hard = tf.stop_gradient(self._hard_mask(layer, magnitude, allowed))
        if training:
            selected = tf.cast(hard, layer.ever_selected.dtype)
            layer.ever_selected.assign(tf.maximum(layer.ever_selected, selected))
        return _straight_through(hard, magnitude, allowed)

    def get_config(self):
        return {"keep_fraction": self.keep_fraction}


@keras.saving.register_keras_serializable(_PACKAGE)
class SigmoidScores(MaskRule):
    """Continuous sparsification (Savarese et al. 2020, Eq. 5-6): m = σ(β·s) ⊙ mask, with the
    temperature β a non-trainable layer variable; the ticket is b(s) = 1[s > 0] (Eq. 3) ⊙ mask.

    At s = 0 exactly, where the paper leaves b undefined (s ∈ ℝ≠0), b(0) = 0: the weight is
    pruned, as in the authors' code (`(s > 0)`), while its soft mask is σ(β·0) = 1/2 at every β,
    so no annealing decides it. With s_0 = 0 (ContinuousSparsificationSearch's default) the
    ticket before any training is empty, and a weight is kept only once training has pushed its
    score above 0; a score that never moves (zero gradient throughout, e.g. λ = 0 and an input
    that is always 0) stays pruned, and the reset min(β_T·s_T, s_0) keeps it at 0.

    Args:
      initial_beta: β at the start (the search anneals it, layer.beta).
    """

    needs_scores = True

    def __init__(self, initial_beta=1.0):
        self.initial_beta = float(initial_beta)

    def build(self, layer):
        layer.beta = layer.add_weight(
            name="beta", shape=(), trainable=False,
            initializer=keras.initializers.Constant(self.initial_beta),
            aggregation="only_first_replica")

    def mask(self, layer, training=None):
        scores = tf.convert_to_tensor(layer.scores)
        beta = tf.cast(layer.beta, scores.dtype)
        return tf.sigmoid(beta * scores) * tf.cast(layer.mask, scores.dtype)

    def binary_mask(self, layer):
        scores = tf.convert_to_tensor(layer.scores)
        return tf.cast(scores > 0, scores.dtype) * tf.cast(layer.mask, scores.dtype)

    def get_config(self):
        return {"initial_beta": self.initial_beta}


@keras.saving.register_keras_serializable(_PACKAGE)
class BernoulliScores(MaskRule):
    """Stochastic sparsification (Savarese et al. 2020, Algorithm 2, after Srinivas et al.):
    m ~ Bernoulli(σ(s)) in training, straight-through ∂m/∂σ(s) = I; 1[σ(s) > 0.5] otherwise."""

    needs_scores = True

    def mask(self, layer, training=None):
        scores = tf.convert_to_tensor(layer.scores)
        prob = tf.sigmoid(scores)
        allowed = tf.cast(layer.mask, scores.dtype)
        if not training:
            return tf.cast(scores > 0, scores.dtype) * allowed
        sample = tf.cast(tf.random.uniform(tf.shape(prob), dtype=prob.dtype) < prob, prob.dtype)
        return (tf.stop_gradient(sample - prob) + prob) * allowed

    def binary_mask(self, layer):
        scores = tf.convert_to_tensor(layer.scores)
        return tf.cast(scores > 0, scores.dtype) * tf.cast(layer.mask, scores.dtype)


RULES = {"fixed": FixedMask, "topk": TopKScores, "sigmoid": SigmoidScores,
         "bernoulli": BernoulliScores}


def get_rule(rule):
    """A MaskRule from an instance, a name in RULES, a class, or a serialised config."""
    if rule is None:
        return FixedMask()
    if isinstance(rule, MaskRule):
        return rule
    if isinstance(rule, type) and issubclass(rule, MaskRule):
        return rule()
    if isinstance(rule, str):
        if rule not in RULES:
            from tf_lottery.errors import ConfigError

            raise ConfigError(f"unknown mask rule {rule!r}; choose one of {sorted(RULES)}")
        return RULES[rule]()
    if isinstance(rule, dict):
        return keras.saving.deserialize_keras_object(rule)
    raise TypeError(f"not a mask rule: {rule!r}")
