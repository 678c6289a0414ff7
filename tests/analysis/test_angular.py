import keras
import numpy as np
import pytest

from tf_lottery.analysis import angular_distance, angular_distance_matrix, network_state
from tf_lottery.errors import ConfigError
from tf_lottery.layers import MaskedDense
from tf_lottery.masks import set_masks


def test_identical_orthogonal_opposite_and_45_degrees():
    w = {"l": np.array([3.0, -1.0, 2.0])}
    assert angular_distance(w, w) == 0.0
    assert angular_distance(w, {"l": 7.5 * w["l"]}) == pytest.approx(0.0, abs=1e-12)  # norm-free
    assert angular_distance({"l": np.array([1.0, 0.0])}, {"l": np.array([0.0, 2.0])}) == \
        pytest.approx(1.0)
    assert angular_distance(w, {"l": -w["l"]}) == pytest.approx(2.0)
    assert angular_distance({"l": np.array([1.0, 0.0])}, {"l": np.array([1.0, 1.0])}) == \
        pytest.approx(0.5)


def test_layers_are_concatenated_into_one_vector():
    a = {"x": np.array([1.0]), "y": np.array([1.0])}
    b = {"x": np.array([1.0]), "y": np.array([-1.0])}
    # per layer the angles would be 0 and π; over the concatenation (1, 1)·(1, −1) = 0
    assert angular_distance(a, b) == pytest.approx(1.0)


def test_only_the_intersection_of_the_masks_counts():
    a = {"l": np.array([1.0, 2.0, 5.0, 9.0])}
    b = {"l": np.array([1.0, 2.0, -7.0, 0.0])}
    mask_a = {"l": np.array([1.0, 1.0, 1.0, 0.0])}
    mask_b = {"l": np.array([1.0, 1.0, 0.0, 1.0])}
    assert angular_distance(a, b) > 0.1
    assert angular_distance((a, mask_a), (b, mask_b)) == pytest.approx(0.0, abs=1e-12)
    # one mask alone: its own zeros only; (1, 2, 5, ·) against (1, 2, −7, ·)
    expected = 2 / np.pi * np.arccos((1 + 4 - 35) / (np.sqrt(30) * np.sqrt(54)))
    assert angular_distance((a, mask_a), b) == pytest.approx(expected)
    assert angular_distance(a, (b, mask_a)) == pytest.approx(expected)


def test_matrix_with_initialisation_as_last_row():
    init = {"l": np.array([1.0, 1.0, 1.0])}
    rounds = [({"l": np.array([1.0, 1.0, -4.0])}, {"l": np.array([1.0, 1.0, 0.0])}),
              ({"l": np.array([1.0, -1.0, 0.0])}, {"l": np.array([1.0, 1.0, 0.0])}),
              ({"l": np.array([0.0, 3.0, 0.0])}, {"l": np.array([0.0, 1.0, 0.0])})]
    d = angular_distance_matrix(rounds, initialization=init)
    assert d.shape == (4, 4)
    np.testing.assert_allclose(d, d.T)
    np.testing.assert_allclose(np.diag(d), 0.0)
    assert d[0, 3] == pytest.approx(0.0, abs=1e-12)  # (1, 1) vs (1, 1) under round 0's mask
    assert d[1, 3] == pytest.approx(1.0)  # (1, −1) vs (1, 1)
    assert d[0, 1] == pytest.approx(1.0)
    assert d[0, 2] == pytest.approx(0.0, abs=1e-12)  # only the second entry is shared
    assert angular_distance_matrix(rounds).shape == (3, 3)


def test_live_models_use_raw_kernels_under_their_masks():
    def model():
        return keras.Sequential([keras.Input((2,)), MaskedDense(2, name="a"),
                                 keras.layers.Dense(1, name="out")])

    m1, m2 = model(), model()
    m2.set_weights(m1.get_weights())
    assert angular_distance(m1, m2) == pytest.approx(0.0, abs=1e-12)
    set_masks(m2, {"a": np.array([[1, 0], [0, 1]], np.float32)})
    weights, masks = network_state(m2)
    assert set(weights) == {"a", "out"} and set(masks) == {"a"}
    m2.get_layer("a").raw_kernel.assign(m1.get_layer("a").raw_kernel.numpy() * [[1, -3], [-3, 1]])
    assert angular_distance(m1, m2) == pytest.approx(0.0, abs=1e-12)  # changes only where pruned
    m2.get_layer("out").kernel.assign(-m1.get_layer("out").kernel.numpy())
    assert angular_distance(m1, m2) > 0.1


def test_mismatched_layers_are_refused():
    with pytest.raises(ConfigError):
        angular_distance({"a": np.ones(2)}, {"b": np.ones(2)})
    with pytest.raises(ConfigError):
        angular_distance(({"a": np.ones(2)}, {"c": np.ones(2)}), {"a": np.ones(2)})
