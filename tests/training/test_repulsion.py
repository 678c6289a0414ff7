import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.errors import ConfigError
from tf_lottery.layers import FixedMask, MaskedDense
from tf_lottery.training.repulsion import REPULSION, RepulsionLoss, repulsion_loss
from tf_lottery.training.sparse_model import SparseModel


def _loss(kernels, masks, optima, strength):
    stacked = [np.stack([o[i] for o in optima]) for i in range(len(kernels))]
    return float(repulsion_loss([tf.constant(k, tf.float64) for k in kernels],
                                [tf.constant(m, tf.float64) for m in masks],
                                [tf.constant(s, tf.float64) for s in stacked], strength))


def test_hand_computed_values():
    theta = [np.array([[1.0], [0.0]])]
    ones = [np.ones((2, 1))]
    # θ = (1, 0), θ_r = (1, 1): cos = 1/√2, cos² = 1/2, J = λ/|Θ|·1/2
    assert _loss(theta, ones, [[np.array([[1.0], [1.0]])]], 2.0) == pytest.approx(1.0)
    assert _loss(theta, ones, [[np.array([[1.0], [1.0]])]], -1.0) == pytest.approx(-0.5)
    # the mask enters both vectors: m = (1, 0) leaves (1) and (1), cos² = 1
    assert _loss(theta, [np.array([[1.0], [0.0]])], [[np.array([[1.0], [1.0]])]],
                 2.0) == pytest.approx(2.0)
    # the average over Θ: cos² = 1/2 and 0, J = 2·(1/2 + 0)/2
    assert _loss(theta, ones, [[np.array([[1.0], [1.0]])], [np.array([[0.0], [3.0]])]],
                 2.0) == pytest.approx(0.5)


def test_one_vector_over_all_layers():
    # layer a: θ = (1), θ_r = (1); layer b: θ = (0), θ_r = (1). Over the concatenated vectors
    # cos² = 1/2 (per layer it would be 1 and undefined).
    kernels = [np.array([[1.0]]), np.array([[0.0]])]
    optimum = [np.array([[1.0]]), np.array([[1.0]])]
    masks = [np.ones((1, 1)), np.ones((1, 1))]
    assert _loss(kernels, masks, [optimum], 1.0) == pytest.approx(0.5)


def test_zero_vector_gives_zero_not_nan():
    value = _loss([np.array([[1.0], [2.0]])], [np.zeros((2, 1))], [[np.ones((2, 1))]], 2.0)
    assert value == 0.0


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    shapes = [(4, 3), (3, 2)]
    kernels = [tf.Variable(rng.normal(size=s)) for s in shapes]
    masks = [tf.constant((rng.random(s) < 0.6).astype(np.float64)) for s in shapes]
    optima = [tf.constant(rng.normal(size=(3,) + s)) for s in shapes]

    def loss():
        return repulsion_loss(kernels, masks, optima, 2.0)

    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, kernels)
    eps = 1e-6
    for kernel, grad, mask in zip(kernels, grads, masks):
        numeric = np.zeros(kernel.shape)
        for index in np.ndindex(*kernel.shape):
            original = kernel.numpy()
            for sign in (1, -1):
                shifted = original.copy()
                shifted[index] += sign * eps
                kernel.assign(shifted)
                numeric[index] += sign * float(loss()) / (2 * eps)
            kernel.assign(original)
        np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-6, atol=1e-9)
        # pruned weights are not in the sub-network: exactly zero gradient
        assert np.all(grad.numpy()[mask.numpy() == 0] == 0)
        assert np.any(grad.numpy() != 0)


def _tiny_model(seed=0):
    init = keras.initializers.RandomNormal(seed=seed)
    inputs = keras.Input((6,))
    x = MaskedDense(5, activation="relu", mask_rule=FixedMask(), kernel_initializer=init,
                    name="a")(inputs)
    outputs = MaskedDense(3, mask_rule=FixedMask(), kernel_initializer=init, name="b")(x)
    return SparseModel(keras.Model(inputs, outputs))


def test_regulariser_on_a_model_matches_the_formula():
    model = _tiny_model()
    layers = [model.network.get_layer("a"), model.network.get_layer("b")]
    rng = np.random.default_rng(0)
    layers[0].mask.assign((rng.random((6, 5)) < 0.5).astype(np.float32))
    optima = [{l.name: rng.normal(size=l.raw_kernel.shape) for l in layers} for _ in range(2)]
    loss = RepulsionLoss(layers, optima, strength=2.0)
    theta = np.concatenate([(l.raw_kernel.numpy() * l.mask.numpy()).ravel() for l in layers])
    expected = []
    for optimum in optima:
        other = np.concatenate([(optimum[l.name] * l.mask.numpy()).ravel() for l in layers])
        expected.append((theta @ other / np.linalg.norm(theta) / np.linalg.norm(other)) ** 2)
    np.testing.assert_allclose(loss.squared_cosines().numpy(), expected, rtol=1e-5)
    assert float(loss(model)) == pytest.approx(2.0 * np.mean(expected), rel=1e-5)
    with pytest.raises(ConfigError):
        RepulsionLoss(layers, [], 2.0)


@pytest.mark.parametrize("strength", [5.0, -5.0])
def test_training_repels_or_attracts(strength):
    model = _tiny_model()
    layers = [model.network.get_layer("a"), model.network.get_layer("b")]
    rng = np.random.default_rng(1)
    # a stored optimum at a moderate angle to the current weights (cos² ≈ 0.5)
    optimum = {l.name: l.raw_kernel.numpy() + rng.normal(size=l.raw_kernel.shape)
               * np.std(l.raw_kernel.numpy()) for l in layers}
    loss = RepulsionLoss(layers, [optimum], strength)
    before = float(loss.squared_cosines()[0])
    assert 0.2 < before < 0.8
    model.add_regularizer(REPULSION, loss)
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    after = float(loss.squared_cosines()[0])
    assert REPULSION in history.history
    if strength > 0:
        assert after < before - 0.1
    else:
        assert after > before + 0.1
