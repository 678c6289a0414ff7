"""Exact top-k masks: which entries of a tensor are its k largest.

`top_k_mask(values, k)` has exactly k ones, at the k largest values; among equal values the
earlier positions (row-major) win, as a stable descending sort chooses. Values are compared
through int32 *keys* that order like the float32 values (`order_keys`), so every search below
runs on integers and ends exactly. Two ways to find the k-th largest key give the same mask:

* 'sort': a stable sort (`tf.argsort`), one kernel on GPUs and TPUs, where it is the fastest;
  on a CPU a sort of a million values takes ~0.1-0.2 s. (`tf.math.approx_max_k` is not used: its
  recall is below 1, and a ticket's mask must be exact.)
* 'count': a counting search, no sort. f(t) = count(key >= t) falls as t grows; find t with
  f(t) = k by regula falsi on f (Illinois variant, then bisection, so it always ends), each probe
  one pass over the keys. The first probes come from a `hint` (a threshold from before, e.g. the
  previous training step's, which moves little between steps) or else from order statistics of
  a strided sample of the keys. When ties at the k-th largest key make f(t) = k impossible, the
  search ends on that key and the tie is split by position (`_first_true`).

`method='auto'` sorts where a GPU or TPU is visible, and on CPUs for up to 8192 values (where
the search's loop costs more than the sort); it counts otherwise. `top_k_threshold`
also returns the threshold it found, to serve as the next call's hint.
"""
import tensorflow as tf

METHODS = ("auto", "sort", "count")
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
_SAMPLE_SIZE = 4096  # strided sample whose order statistics give the first probes
_BISECT_AFTER = 12  # regula falsi probes; then bisection bounds the worst case (~32 more)
# bench/topk.py on 2 CPU cores: a stable sort of 1,000 / 2,304 / 9,216 / 36,864 keys took
# 0.2 / 0.4 / 1.1 / 6.6 ms, the warm counting search 0.7 / 0.7 / 0.8 / 1.7 ms (docs/RESULTS.md)
_SORT_UP_TO = 8192
_OVERSHOOT = 1.2  # a step from a hint goes 1.2x the estimated distance (then x4 per probe)


def order_keys(values):
    """int32 keys ordered like the float32 `values` (IEEE-754 bits, negatives flipped)."""
    bits = tf.bitcast(tf.cast(values, tf.float32), tf.int32)
    return tf.where(bits >= 0, bits, bits ^ tf.constant(0x7FFFFFFF, tf.int32))


def _count_at_least(keys, t):
    return tf.reduce_sum(tf.cast(keys >= t, tf.int32))


def _sample_order_statistics(keys, k, n):
    """(above, below, keys per rank): sample order statistics at rank k·m/n ∓ 3 binomial
    standard deviations, which likely bracket the k-th largest key, and the keys' spacing
    per rank of the whole tensor near it (for extrapolating from a hint)."""
    sample = tf.sort(keys[::tf.maximum(n // _SAMPLE_SIZE, 1)], direction="DESCENDING")
    m = tf.size(sample)
    share = tf.cast(k, tf.float64) / tf.cast(tf.maximum(n, 1), tf.float64)
    rank = share * tf.cast(m, tf.float64)
    margin = 3.0 * tf.sqrt(rank * (1.0 - share)) + 2.0

    def at(r):  # the sample's r-th largest (1-based, clipped)
        return tf.cast(sample[tf.clip_by_value(tf.cast(r, tf.int32), 1, m) - 1], tf.int64)

    above, below = at(tf.math.floor(rank - margin)), at(tf.math.ceil(rank + margin))
    ranks = tf.cast(n, tf.float64) / tf.cast(m, tf.float64) * 2.0 * margin
    spacing = tf.cast(above - below, tf.float64) / tf.maximum(ranks, 1.0)
    return above, below, spacing


def kth_largest_key(keys, k, hint=None):
    """(t, count(keys >= t), count(keys > t), probes) for the 1-D int32 `keys` and
    1 <= k <= n, where count(keys >= t) == k, or, where ties make that impossible, t is the
    k-th largest key; `probes` is the number of counting passes the search took.

    The bracket [lo, hi) keeps f(lo) >= k > f(hi) for f(t) = count(keys >= t); it starts as
    the whole int32 range and shrinks with every probe until f(lo) == k or hi == lo + 1.
    """
    n = tf.size(keys)
    k, n64 = tf.cast(k, tf.int64), tf.cast(n, tf.int64)
    above, below, spacing = _sample_order_statistics(keys, k, n)
    warm = hint is not None

    def probe_at(i, lo, hi, f_lo, f_hi, weight_lo, weight_hi):
        first = tf.cast(hint, tf.int64) if warm else above
        # one end still open: step from the other by the estimated distance in keys
        # (ranks to go x keys per rank), growing 4x per probe until the next one brackets
        open_below = tf.equal(lo, INT32_MIN)
        ranks = tf.cast(tf.where(open_below, k - f_hi, f_lo - k), tf.float64)
        growth = tf.pow(tf.constant(4.0, tf.float64), tf.cast(tf.maximum(i - 1, 0), tf.float64))
        step = (_OVERSHOOT * spacing * ranks + 1.0) * growth
        step = tf.cast(tf.minimum(step, 2.0**33), tf.int64)
        extrapolated = tf.where(open_below, hi - step, lo + step)
        share = weight_lo / (weight_lo + weight_hi)  # regula falsi between lo and hi
        falsi = lo + tf.cast(tf.round(share * tf.cast(hi - lo, tf.float64)), tf.int64)
        bracketed = ~open_below & (hi <= INT32_MAX)
        probe = tf.where(
            i == 0, first, tf.where(
                (i == 1) & (not warm) & open_below, below, tf.where(
                    ~bracketed, extrapolated, tf.where(
                        i < _BISECT_AFTER, falsi, lo + (hi - lo) // 2))))
        return tf.clip_by_value(probe, lo + 1, hi - 1)

    def body(i, lo, hi, f_lo, f_hi, weight_lo, weight_hi, side):
        t = probe_at(i, lo, hi, f_lo, f_hi, weight_lo, weight_hi)
        f = tf.cast(_count_at_least(keys, tf.cast(t, tf.int32)), tf.int64)
        enough = f >= k
        # Illinois: an end that stays put a second time has its weight halved
        weight_lo = tf.where(enough, tf.cast(f - k, tf.float64),
                             tf.where(side < 0, weight_lo / 2, weight_lo))
        weight_hi = tf.where(enough, tf.where(side > 0, weight_hi / 2, weight_hi),
                             tf.cast(k - f, tf.float64))
        return (i + 1, tf.where(enough, t, lo), tf.where(enough, hi, t),
                tf.where(enough, f, f_lo), tf.where(enough, f_hi, f),
                weight_lo, weight_hi, tf.where(enough, 1, -1))

    def searching(i, lo, hi, f_lo, *_):
        return (f_lo != k) & (hi - lo > 1)

    lo, hi = tf.constant(INT32_MIN, tf.int64), tf.constant(INT32_MAX, tf.int64) + 1
    start = (tf.constant(0), lo, hi, n64, tf.constant(0, tf.int64),
             tf.cast(n64 - k, tf.float64), tf.cast(k, tf.float64), tf.constant(0))
    probes, lo, hi, f_lo, f_hi = tf.while_loop(searching, body, start)[:5]
    # hi == lo + 1 means f(lo + 1) == count(keys > lo); with f(lo) == k nothing is tied there
    above_lo = tf.where(f_lo == k, k, f_hi)
    return tf.cast(lo, tf.int32), f_lo, above_lo, probes


_ROW = 1024  # _first_true counts in rows of this length


def _first_true(flags, count):
    """Boolean: the first `count` True entries of the 1-D boolean `flags` (by position).

    The same as flags & (cumsum(flags) <= count), without a cumulative sum over the whole
    tensor (slow on CPUs, seconds to compile with XLA): count per row of _ROW entries, find
    the row holding the count-th True from the rows' running totals, and sort that row's
    True positions to find its column.
    """
    n = tf.size(flags)
    rows = (n + _ROW - 1) // _ROW
    padded = tf.pad(flags, [[0, rows * _ROW - n]])
    grid = tf.reshape(padded, [rows, _ROW])
    per_row = tf.reduce_sum(tf.cast(grid, tf.int32), axis=1)
    before = tf.cumsum(per_row, exclusive=True)
    count = tf.clip_by_value(count, 0, tf.reduce_sum(per_row))
    row = tf.minimum(tf.reduce_sum(tf.cast(before + per_row < count, tf.int32)), rows - 1)
    positions = tf.sort(tf.where(tf.gather(padded, row * _ROW + tf.range(_ROW)),
                                 tf.range(_ROW), _ROW))
    column = tf.gather(positions, tf.clip_by_value(count - tf.gather(before, row) - 1, 0,
                                                   _ROW - 1))
    column = tf.where(count > 0, column, -1)  # none kept when count is 0
    row_index, column_index = tf.range(rows)[:, None], tf.range(_ROW)[None, :]
    upto = (row_index < row) | ((row_index == row) & (column_index <= column))
    return tf.reshape(grid & upto, [-1])[:n]


def _count_top_k(keys, k, hint):
    """(keep, t) by the counting search."""
    t, f_t, above_t, _ = kth_largest_key(keys, k, hint)

    def split_ties():  # keep every key > t and the first k - count(keys > t) of those == t
        wanted = tf.cast(tf.cast(k, tf.int64) - above_t, tf.int32)
        return (keys > t) | _first_true(keys == t, wanted)

    keep = tf.cond(f_t == tf.cast(k, tf.int64), lambda: keys >= t, split_ties)
    return keep, t


def _sort_top_k(keys, k):
    """(keep, t) by a stable descending sort: an entry is kept when its rank is below k
    (static shapes, so XLA compiles it with k a tensor, which tf.math.top_k's k cannot be)."""
    order = tf.argsort(keys, direction="DESCENDING", stable=True)
    rank = tf.scatter_nd(order[:, None], tf.range(tf.size(keys)), tf.shape(keys))
    return rank < k, tf.gather(keys, order[k - 1])


def use_sort(method, size=None):
    """Whether `method` ('auto', 'sort' or 'count') means sorting `size` keys on this machine:
    'auto' sorts on GPUs and TPUs, and on CPUs up to _SORT_UP_TO keys."""
    if method not in METHODS:
        raise ValueError(f"top-k method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        return bool(tf.config.list_logical_devices("GPU") or
                    tf.config.list_logical_devices("TPU") or
                    (size is not None and size <= _SORT_UP_TO))
    return method == "sort"


def top_k_threshold(keys, k, hint=None, method="auto"):
    """(keep, t): boolean `keep` at the k largest of the 1-D int32 `keys` (earlier positions
    winning ties) and a threshold t with count(keys >= t) >= k >= count(keys > t) (INT32_MAX
    for k = 0), the hint for the next call.
    `hint` (an int32 key) only speeds up the counting search; any value gives the same mask."""
    n = tf.size(keys)
    k = tf.clip_by_value(tf.cast(k, tf.int32), 0, n)

    def select():
        if use_sort(method, keys.shape.num_elements()):
            return _sort_top_k(keys, k)
        return _count_top_k(keys, k, hint)

    def none():
        return tf.zeros_like(keys, tf.bool), tf.constant(INT32_MAX, tf.int32)

    return tf.cond(k > 0, select, none)


def top_k_mask(values, k, allowed=None, method="auto"):
    """0/1 tensor shaped like `values` with ones at the k largest entries (of those where
    `allowed` > 0, if given; k beyond them takes disallowed entries, earliest first).
    Exactly k ones; among equal values the earlier positions win."""
    values = tf.convert_to_tensor(values)
    keys = order_keys(tf.reshape(values, [-1]))
    if allowed is not None:
        keys = tf.where(tf.reshape(allowed, [-1]) > 0, keys, INT32_MIN)
    keep, _ = top_k_threshold(keys, k, method=method)
    return tf.reshape(tf.cast(keep, values.dtype), tf.shape(values))
