import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.analysis import hessian_top_eigenpair, hessian_top_eigenvalue, weight_parameters
from tf_lottery.layers import MaskedDense
from tf_lottery.masks import set_masks

MASK = np.array([[1, 0, 1], [0, 1, 1]], np.float32)


def _tiny(masked=True):
    dense = MaskedDense if masked else keras.layers.Dense
    return keras.Sequential([keras.Input((2,)), dense(3, activation="tanh", name="h"),
                             dense(2, name="out")])


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 2)).astype(np.float32), rng.integers(0, 2, 6)


CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _explicit_hessian(model, x, y):
    """The full Hessian of the loss w.r.t. the concatenated kernels (tf jacobian of gradient)."""
    variables = [v.value for v, _ in weight_parameters(model)]
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = CE(y, model(x))
        grads = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, variables)], 0)
    blocks = [tf.reshape(j, [grads.shape[0], -1]) for j in outer.jacobian(grads, variables)]
    return tf.concat(blocks, 1).numpy().astype(np.float64)


def _top_by_magnitude(matrix):
    values = np.linalg.eigvalsh((matrix + matrix.T) / 2)
    return values[np.argmax(np.abs(values))]


def test_matches_largest_eigenvalue_of_explicit_hessian_over_unpruned_weights():
    x, y = _data()
    model = _tiny()
    set_masks(model, {"h": MASK})
    full = _explicit_hessian(model, x, y)
    keep = np.concatenate([MASK.ravel(), np.ones(6)]) == 1
    restricted = _top_by_magnitude(full[np.ix_(keep, keep)])
    pair = hessian_top_eigenpair(model, x, y, CE, max_iterations=1000, tolerance=1e-7)
    assert pair.converged
    assert pair.value == pytest.approx(restricted, rel=1e-3)
    # masked entries do not contribute: the eigenvector is zero there, and the dense Hessian's
    # top eigenvalue is a different number
    np.testing.assert_array_equal(pair.vector["sequential/h/kernel"][MASK == 0], 0.0)
    dense_model = _tiny()
    dense_model.set_weights(model.get_weights())
    set_masks(dense_model, {"h": np.ones_like(MASK)})
    dense_top = _top_by_magnitude(_explicit_hessian(dense_model, x, y))
    assert abs(dense_top - restricted) > 1e-2 * abs(restricted)
    assert hessian_top_eigenvalue(dense_model, x, y, CE, max_iterations=1000, tolerance=1e-7) \
        == pytest.approx(dense_top, rel=1e-3)


def test_pruned_raw_values_change_nothing_and_plain_models_take_a_masks_dict():
    x, y = _data()
    model = _tiny()
    set_masks(model, {"h": MASK})
    expected = hessian_top_eigenvalue(model, x, y, CE, max_iterations=500, tolerance=1e-7)
    raw = model.get_layer("h").raw_kernel
    raw.assign(np.where(MASK == 0, 50.0, raw.numpy()))
    assert hessian_top_eigenvalue(model, x, y, CE, max_iterations=500, tolerance=1e-7) == \
        pytest.approx(expected, rel=1e-3)
    # the exported plain model (kernel folded) with the masks dict measures the same subspace
    plain = _tiny(masked=False)
    plain.get_layer("h").kernel.assign(model.get_layer("h").kernel)
    plain.get_layer("h").bias.assign(model.get_layer("h").bias)
    plain.get_layer("out").set_weights([model.get_layer("out").raw_kernel.numpy(),
                                        model.get_layer("out").bias.numpy()])
    assert hessian_top_eigenvalue(plain, x, y, CE, masks={"h": MASK}, max_iterations=500,
                                  tolerance=1e-7) == pytest.approx(expected, rel=1e-3)


def test_compiled_loss_is_used_without_loss_fn():
    x, y = _data()
    model = _tiny()
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert hessian_top_eigenvalue(model, x, y, max_iterations=300, tolerance=1e-7) == \
        pytest.approx(hessian_top_eigenvalue(model, x, y, CE, max_iterations=300,
                                             tolerance=1e-7), rel=1e-4)
