import numpy as np
import pytest

from tf_lottery.errors import ConfigError, TrainingError
from tf_lottery.pruning.selection import masks_from_scores, prune_count, remove_lowest


@pytest.mark.parametrize("fraction, remaining, removed", [
    (0.15, 10, 2),   # 1.5 rounds up (0.15*10 = 1.5000000000000002 in floating point)
    (0.35, 10, 4),   # 3.5 rounds up (0.35*10 = 3.4999999999999996 in floating point)
    (0.25, 10, 3),   # 2.5 rounds up (banker's rounding would give 2)
    (0.25, 2, 1),    # 0.5 rounds up (Python's round would give 0)
    (0.2, 7, 1),     # 1.4 rounds down
    (0.2, 8, 2),     # 1.6 rounds up
    (0.2, 0, 0),
    (0.0, 5, 0),
])
def test_prune_count_rounds_half_up(fraction, remaining, removed):
    assert prune_count(fraction, remaining) == removed


def test_remove_lowest_only_among_unpruned_and_ties_remove_later_position():
    scores = {"a": np.array([5.0, 1.0, 1.0, 1.0, 0.0]), "b": np.array([1.0, 9.0])}
    masks = {"a": np.array([1, 1, 1, 1, 0], np.float32), "b": np.array([1, 1], np.float32)}
    # Four tied 1.0 scores among unpruned weights (a1, a2, a3, b0); the pruned a4 (score 0)
    # is not a candidate. Removing 2 takes the two latest tied positions: b0, then a3.
    new = remove_lowest(scores, masks, 2)
    np.testing.assert_array_equal(new["a"], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(new["b"], [0, 1])
    assert new["a"].dtype == np.float32
    with pytest.raises(ConfigError):
        remove_lowest(scores, masks, 7)


def test_layerwise_and_global_counts():
    scores = {"a": np.arange(10.0).reshape(2, 5), "b": np.arange(10.0, 14.0)}
    masks = {"a": np.ones((2, 5), np.float32), "b": np.ones(4, np.float32)}
    layerwise = masks_from_scores(scores, masks, 0.25, "layerwise")
    # a: round-half-up(2.5) = 3 lowest; b: round-half-up(1.0) = 1 lowest
    np.testing.assert_array_equal(layerwise["a"].ravel(), [0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(layerwise["b"], [0, 1, 1, 1])
    pooled = masks_from_scores(scores, masks, 0.25, "global")
    # 14 pooled, round-half-up(3.5) = 4 lowest, all in a
    np.testing.assert_array_equal(pooled["a"].ravel(), [0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(pooled["b"], [1, 1, 1, 1])
    per_layer = masks_from_scores(scores, masks, 0.25, "layerwise", {"b": 0.5})
    np.testing.assert_array_equal(per_layer["b"], [0, 0, 1, 1])
    np.testing.assert_array_equal(per_layer["a"], layerwise["a"])


def test_invalid_settings_and_non_finite_scores():
    scores = {"a": np.array([np.nan, 1.0, 2.0])}
    masks = {"a": np.array([0, 1, 1], np.float32)}
    # NaN on an already-pruned weight is irrelevant
    np.testing.assert_array_equal(masks_from_scores(scores, masks, 0.5)["a"], [0, 0, 1])
    with pytest.raises(TrainingError):
        masks_from_scores(scores, {"a": np.ones(3, np.float32)}, 0.5)
    with pytest.raises(ConfigError):
        masks_from_scores(scores, masks, 0.5, "global", {"a": 0.1})
    with pytest.raises(ConfigError):
        masks_from_scores(scores, masks, 0.5, "layerwise", {"zz": 0.1})
    with pytest.raises(ConfigError):
        masks_from_scores(scores, masks, 0.5, "per_layer")
    with pytest.raises(ConfigError):
        masks_from_scores(scores, masks, 1.0)
