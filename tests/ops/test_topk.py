"""Exact top-k (tf_lottery.ops.topk): the same masks as a stable sort, whatever the method and
hint; ties split by position; a good hint costs one counting pass."""
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.ops import topk
from tf_lottery.ops.topk import kth_largest_key, order_keys, top_k_mask, top_k_threshold


def _reference_top_k(scores, k, allowed=None):
    """k largest allowed scores, earlier positions first among equal ones (a stable sort);
    beyond the allowed ones, the earliest disallowed ones."""
    flat = scores.reshape(-1).astype(np.float64)
    ok = np.ones(flat.size, bool) if allowed is None else allowed.reshape(-1) > 0
    order = np.lexsort((np.arange(flat.size), -np.where(ok, flat, -np.inf), ~ok))
    keep = np.zeros(flat.size, "float32")
    keep[order[:k]] = 1.0
    return keep.reshape(scores.shape)


def _scores(kind, n, rng):
    return {"normal": rng.normal(size=n),
            "ties": rng.integers(0, 6, size=n),  # every threshold falls inside a tie
            "zeros": np.zeros(n),
            "wide_range": np.abs(rng.normal(size=n)) * 10.0 ** rng.integers(-30, 30, size=n),
            "negative": -np.abs(rng.normal(size=n))}[kind].astype("float32")


@pytest.mark.parametrize("method", ["count", "sort"])
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros", "wide_range", "negative"])
def test_top_k_mask_matches_a_stable_sort(kind, method):
    # 9001 entries: more than one sample (4096) and a partial last row of the tie split.
    rng = np.random.default_rng(len(kind))
    n = 9001
    scores = _scores(kind, n, rng)
    allowed = (rng.random(n) < 0.6).astype("float32")
    select = tf.function(lambda s, k, a=None: top_k_mask(s, k, a, method=method))
    for k in [0, 1, 2, 4500, n - 1, n]:
        np.testing.assert_array_equal(select(scores, tf.constant(k)).numpy(),
                                      _reference_top_k(scores, k), err_msg=f"k={k}")
    for k in [0, 1, 3000, int(allowed.sum()), int(allowed.sum()) + 7]:
        np.testing.assert_array_equal(select(scores, tf.constant(k), allowed).numpy(),
                                      _reference_top_k(scores, k, allowed), err_msg=f"k={k}")


@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_any_hint_gives_the_same_mask(kind):
    rng = np.random.default_rng(7)
    scores = _scores(kind, 5000, rng)
    keys = order_keys(scores)
    select = tf.function(lambda k, hint: top_k_threshold(keys, k, hint, method="count"))
    extremes = [topk.INT32_MIN + 1, topk.INT32_MAX, -5]
    for k in [1, 2500, 4999]:
        expected = _reference_top_k(scores, k)
        exact = int(select(k, 0)[1])
        for hint in extremes + [exact, exact + 1, exact - 1, exact + 10**5, exact - 10**6]:
            keep, t = select(k, tf.constant(hint, tf.int32))
            np.testing.assert_array_equal(keep.numpy(), expected, err_msg=f"k={k} hint={hint}")
            # the threshold returned separates the top k (or is the tied k-th largest key)
            assert np.sum(keys.numpy() >= int(t)) >= k >= np.sum(keys.numpy() > int(t))


def test_an_exact_hint_costs_one_counting_pass_and_a_near_one_fewer_than_none():
    rng = np.random.default_rng(3)
    values = np.abs(rng.normal(size=100_000)).astype("float32")
    k = 50_000
    search = tf.function(kth_largest_key)
    t, count, _, _ = search(order_keys(values), k)
    assert int(count) == k
    assert int(search(order_keys(values), k, t)[3]) == 1
    # the previous step's threshold after small changes of the values (as one training step
    # makes) saves probes on average
    cold, warm = 0, 0
    for _ in range(6):
        keys = order_keys(values + rng.normal(size=values.size).astype("float32") * 1e-4)
        cold += int(search(keys, k)[3])
        warm += int(search(keys, k, t)[3])
    assert warm < cold, (warm, cold)


def test_the_search_ends_on_a_tie_and_reports_it():
    keys = order_keys(np.array([3, 1, 2, 2, 2, 0, 2, 5], "float32"))
    t, at_least, above, _ = kth_largest_key(keys, 4)
    assert int(t) == int(order_keys(np.float32(2.0)))  # the 4th largest value, tied
    assert (int(at_least), int(above)) == (6, 2)  # no threshold keeps exactly 4


@pytest.mark.parametrize("method", ["count", "sort"])
def test_top_k_mask_compiles_with_xla_and_splits_ties_by_position(method):
    scores = np.array([3, 1, 2, 2, 2, 0, 2, 5], "float32")
    select = tf.function(lambda s, k: top_k_mask(s, k, method=method), jit_compile=True)
    # the 2s tie at the threshold: the first ones (positions 2, 3) win
    np.testing.assert_array_equal(select(scores, 4).numpy(), [1, 0, 1, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(select(scores, 6).numpy(), [1, 0, 1, 1, 1, 0, 1, 1])
    np.testing.assert_array_equal(select(scores, 0).numpy(), np.zeros(8))


@pytest.mark.parametrize("n", [1, 1023, 1024, 3000])
def test_first_true_keeps_the_first_count_true_entries(n):
    flags = np.random.default_rng(n).random(n) < 0.3
    rank = np.cumsum(flags)
    for count in sorted({0, 1, int(flags.sum()) // 2, int(flags.sum()), int(flags.sum()) + 5}):
        got = topk._first_true(tf.constant(flags), tf.constant(count, tf.int32))
        np.testing.assert_array_equal(got.numpy(), flags & (rank <= count), err_msg=str(count))


def test_an_unknown_method_is_one_error():
    with pytest.raises(ValueError, match="top-k method"):
        top_k_mask(np.ones(3, "float32"), 1, method="radix")


def test_auto_sorts_small_tensors_and_counts_large_ones_on_a_cpu():
    if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        pytest.skip("'auto' always sorts on accelerators")
    assert topk.use_sort("auto", 1000) and topk.use_sort("auto", topk._SORT_UP_TO)
    assert not topk.use_sort("auto", topk._SORT_UP_TO + 1) and not topk.use_sort("auto")
    assert topk.use_sort("sort", 10**7) and not topk.use_sort("count", 10)
