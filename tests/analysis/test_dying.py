import keras
import numpy as np
import pytest

from tf_lottery.analysis import (DyingRatioTracker, dying_ratio, dying_stats, model_dying_stats,
                                 reset_ever_selected)
from tf_lottery.layers import MaskedDense, TopKScores


def _masks(a, b):
    return {"a": np.array(a, np.float32), "b": np.array(b, np.float32)}


def test_hand_built_sequence_of_masks():
    tracker = DyingRatioTracker()
    # 10 edges, 6 kept: d_0 is the prune fraction 0.4
    assert tracker.update(_masks([1, 1, 0, 0], [1, 1, 1, 1, 0, 0])) == pytest.approx(0.4)
    # edges 2 of a and 4 of b get selected: 2 of 10 never selected so far
    assert tracker.update(_masks([0, 1, 1, 0], [1, 1, 1, 0, 1, 0])) == pytest.approx(0.2)
    assert tracker.update(_masks([1, 1, 0, 0], [1, 1, 1, 1, 0, 0])) == pytest.approx(0.2)
    stats = tracker.stats()
    assert stats.layer_dying_ratios == pytest.approx({"a": 0.25, "b": 1 / 6})
    assert stats.never_selected == 2 and stats.total == 10 and tracker.steps == 3


def test_first_ratio_is_the_prune_fraction_and_never_increases():
    rng = np.random.default_rng(0)
    tracker = DyingRatioTracker()
    ratios = []
    for _ in range(12):
        flat = np.zeros(50, np.float32)
        flat[rng.permutation(50)[:15]] = 1  # prune fraction 0.7
        ratios.append(tracker.update({"l": flat.reshape(5, 10)}))
    assert ratios[0] == pytest.approx(0.7)
    assert all(later <= earlier for earlier, later in zip(ratios, ratios[1:]))
    assert ratios[-1] < ratios[0]


def test_hard_iep_apparent_and_worst_case_counts():
    search_space = _masks([1, 1, 1, 0], [1, 1, 1, 1, 0, 0])  # 7 of 10 edges left by earlier cycles
    tracker = DyingRatioTracker(search_space)
    tracker.update(_masks([1, 0, 0, 0], [1, 1, 0, 0, 0, 0]))
    stats = tracker.stats()
    # inside the search space, a's edges 2-3 and b's edges 3-4 were never selected: 4 of 7
    assert stats.apparent_dying_ratio == pytest.approx(4 / 7)
    # worst case adds the 3 edges pruned by earlier cycles: 7 of 10
    assert stats.worst_case_dying_ratio == pytest.approx(7 / 10)
    assert stats.dying_ratio == pytest.approx(7 / 10)
    assert (stats.outside_search_space, stats.search_space_size) == (3, 7)
    plain = dying_stats({"l": np.array([1.0, 0.0, 0.0, 1.0])})
    assert plain.apparent_dying_ratio == plain.worst_case_dying_ratio == plain.dying_ratio == 0.5


def _edge_popup_model():
    return keras.Sequential([keras.Input((4,)),
                             MaskedDense(5, mask_rule=TopKScores(0.6), name="ep")])


def test_live_model_reads_ever_selected():
    model = _edge_popup_model()
    layer = model.get_layer("ep")
    x = np.ones((2, 4), np.float32)
    assert dying_ratio(model) == 1.0  # nothing selected before a training forward pass
    model(x, training=False)
    assert dying_ratio(model) == 1.0  # inference does not count as selection
    model(x, training=True)
    first = layer.binary_mask().numpy()
    assert dying_ratio(model) == pytest.approx(8 / 20)  # keeps ceil(0.6 * 20) = 12
    layer.scores.assign(np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32))
    model(x, training=True)
    union = np.maximum(first, layer.binary_mask().numpy())
    assert dying_ratio(model) == pytest.approx(np.mean(union == 0))
    assert dying_ratio(model) <= 8 / 20


def test_live_model_hard_iep_cycle():
    model = _edge_popup_model()
    layer = model.get_layer("ep")
    x = np.ones((2, 4), np.float32)
    model(x, training=True)
    search_space = np.ones((4, 5), np.float32)
    search_space[0] = 0  # 15 of 20 edges left
    layer.mask.assign(search_space)
    reset_ever_selected(model)
    model(x, training=True)
    stats = model_dying_stats(model)
    kept = 9  # ceil(0.6 * 15)
    assert stats.apparent_dying_ratio == pytest.approx((15 - kept) / 15)
    assert stats.worst_case_dying_ratio == pytest.approx((20 - kept) / 20)
