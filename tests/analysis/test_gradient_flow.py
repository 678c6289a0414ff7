import keras
import numpy as np
import pytest

from tf_lottery.analysis import gradient_flow
from tf_lottery.layers import MaskedDense

MASK = np.array([[1.0], [0.0], [1.0]], np.float32)
KERNEL = np.array([[0.5], [2.0], [-1.0]], np.float32)
BIAS = np.array([0.25], np.float32)
X = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [2.0, -1.0, 1.0], [1.0, 1.0, 1.0]], np.float32)
Y = np.array([[1.0], [0.0], [2.0], [-1.0]], np.float32)
MSE = keras.losses.MeanSquaredError()


def _manual():
    """L = mean((x·(w⊙m) + b − y)²): ∇w = 2/N·Xᵀr, ∇b = 2/N·Σr, r the residuals."""
    residual = X @ (KERNEL * MASK) + BIAS - Y
    grad_w = 2 / len(X) * X.T @ residual
    grad_b = 2 / len(X) * residual.sum(axis=0)
    return grad_w * MASK, grad_b


def test_norm_over_unpruned_weights_by_hand():
    model = keras.Sequential([keras.Input((3,)), MaskedDense(1, name="l")])
    layer = model.get_layer("l")
    layer.set_weights([KERNEL, BIAS, MASK])
    grad_w, grad_b = _manual()
    assert gradient_flow(model, X, Y, MSE) == pytest.approx(np.linalg.norm(grad_w), rel=1e-5)
    assert gradient_flow(model, X, Y, MSE, include_biases=True) == pytest.approx(
        np.sqrt(np.sum(grad_w ** 2) + np.sum(grad_b ** 2)), rel=1e-5)


def test_plain_model_with_masks_dict():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="l")])
    model.get_layer("l").set_weights([KERNEL * MASK, BIAS])
    grad_w, _ = _manual()
    masked = gradient_flow(model, X, Y, MSE, masks={"l": MASK})
    assert masked == pytest.approx(np.linalg.norm(grad_w), rel=1e-5)
    assert gradient_flow(model, X, Y, MSE) > masked * (1 + 1e-3)  # the pruned weight's gradient
