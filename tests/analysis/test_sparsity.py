import keras
import numpy as np
import pytest

from tf_lottery.analysis import model_sparsity, sparsity_report, weights_sparsity
from tf_lottery.layers import MaskedDense, TopKScores
from tf_lottery.masks import set_masks

HAND_MASKS = {"a": np.array([[1, 0], [0, 0]], np.float32),
              "b": np.array([1, 1, 1, 0, 0, 0], np.float32)}


def test_counts_of_a_masks_dict_by_hand():
    report = sparsity_report(HAND_MASKS)
    assert report.remaining == {"a": 1, "b": 3}
    assert report.total == {"a": 4, "b": 6}
    assert (report.remaining_count, report.total_count) == (4, 10)
    assert report.sparsity == pytest.approx(0.6)
    assert report.density == pytest.approx(0.4)
    assert report.layer_sparsities() == pytest.approx({"a": 0.75, "b": 0.5})
    summary = report.as_dict()
    assert summary["remaining_count"] == 4 and summary["layer_remaining"] == {"a": 1, "b": 3}


def _masked_model():
    return keras.Sequential([keras.Input((2,)), MaskedDense(2, name="a"),
                             MaskedDense(4, name="top", mask_rule=TopKScores(0.25)),
                             keras.layers.Dense(3, name="plain")])


def test_live_model_counts_ticket_masks_of_masked_layers_only():
    model = _masked_model()
    set_masks(model, {"a": HAND_MASKS["a"]})
    report = model_sparsity(model)
    # "a": 1 of 4 kept; "top": ceil(0.25 * 8) = 2 of 8 kept by top-k; the plain Dense is no ticket.
    assert report.remaining == {"a": 1, "top": 2}
    assert report.total == {"a": 4, "top": 8}
    assert report.sparsity == pytest.approx(1 - 3 / 12)


def test_exported_plain_weights_count_exact_zeros_of_kernels():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="d1"),
                              keras.layers.Dense(1, name="d2")])
    model.get_layer("d1").kernel.assign(np.array([[0.0, 1e-30, 0.0], [2.0, 0.0, -1.0]]))
    model.get_layer("d2").kernel.assign(np.array([[0.0], [0.0], [3.0]]))
    report = weights_sparsity(model)
    assert report.remaining == {"d1": 3, "d2": 1}  # 1e-30 is not zero; biases are not counted
    assert report.total == {"d1": 6, "d2": 3}
    assert weights_sparsity({"d1": model.get_layer("d1").kernel.numpy()}).remaining == {"d1": 3}


def test_masked_model_effective_kernels_count_like_its_masks():
    model = _masked_model()
    set_masks(model, {"a": HAND_MASKS["a"]})
    model.get_layer("a").raw_kernel.assign(np.full((2, 2), 5.0))  # pruned raw values nonzero
    exported = weights_sparsity(model)
    assert exported.remaining["a"] == 1 and exported.remaining["top"] == 2
