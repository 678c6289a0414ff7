import keras
import numpy as np
import pytest

from tf_lottery.analysis import (activation_sparsity, activation_zero_counts,
                                 overall_activation_sparsity, zero_fractions)
from tf_lottery.errors import ConfigError
from tf_lottery.layers import MaskedDense


def _model():
    model = keras.Sequential([keras.Input((2,)), MaskedDense(3, activation="relu", name="h"),
                              keras.layers.Dense(2, name="lin"), keras.layers.ReLU(name="r")])
    hidden = model.get_layer("h")
    hidden.raw_kernel.assign([[1.0, -1.0, 5.0], [0.0, 0.0, 1.0]])
    hidden.mask.assign([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])  # third unit's inputs pruned
    hidden.bias.assign([0.0, 0.0, 0.0])
    model.get_layer("lin").set_weights([np.array([[1.0, 0.0], [0.0, -1.0], [0.0, 0.0]]),
                                        np.zeros(2)])
    return model


X = np.array([[1.0, 2.0], [-1.0, 1.0]], np.float32)


def test_zeros_known_from_the_weights():
    model = _model()
    # h: rows (1, −1, 0) and (−1, 1, 0) after the mask → relu (1, 0, 0), (0, 1, 0): 4 of 6 zero
    # r: lin gives (1, 0) and (0, −1) → relu (1, 0), (0, 0): 3 of 4 zero; "lin" is no ReLU
    assert activation_sparsity(model, X) == pytest.approx({"h": 4 / 6, "r": 3 / 4})
    counts = activation_zero_counts(model, [X, (X[:1], np.zeros(1))])
    assert counts == {"h": (6, 9), "r": (4, 6)}
    assert overall_activation_sparsity(counts) == pytest.approx(10 / 15)
    # the layers' own calls are back in place
    assert all("call" not in vars(layer) for layer in model.layers)
    np.testing.assert_allclose(model(X).numpy(), [[1.0, 0.0], [0.0, 0.0]])


def test_layer_filter_and_plain_arrays():
    model = _model()
    only_lin = activation_sparsity(model, X, layer_filter=lambda layer: layer.name == "lin")
    assert only_lin == {"lin": pytest.approx(2 / 4)}  # lin outputs (1, 0), (0, −1)
    with pytest.raises(ConfigError):
        activation_sparsity(model, X, layer_filter=lambda layer: False)
    assert zero_fractions({"a": np.array([0.0, 1.0, -0.0, 2.0])}) == {"a": 0.5}
