import keras
import numpy as np
import pytest

from tf_lottery.analysis import classification_eval_fn, error_barrier, interpolate
from tf_lottery.errors import ConfigError
from tf_lottery.layers import MaskedDense, TopKScores


def test_error_barrier_by_hand():
    assert error_barrier([0.1, 0.3, 0.2]) == pytest.approx(0.3 - 0.15)
    assert error_barrier([0.2, 0.1, 0.0]) == pytest.approx(0.2 - 0.1)  # max at an endpoint
    assert error_barrier([0.5, 0.1, 0.5]) == pytest.approx(0.0)
    with pytest.raises(ConfigError):
        error_barrier([0.3])


def _linear_ticket():
    return keras.Sequential([keras.Input((2,)), MaskedDense(1, use_bias=False, name="w")])


def _ticket_weights(model, raw, mask):
    layer = model.get_layer("w")
    layer.raw_kernel.assign(np.array(raw, np.float32).reshape(2, 1))
    layer.mask.assign(np.array(mask, np.float32).reshape(2, 1))
    return model.get_weights()


def test_midpoint_interpolates_effective_weights_by_hand():
    model = _linear_ticket()
    # ticket a: raw (2, 9) under mask (1, 0) = effective (2, 0); ticket b: (7, 4)·(0, 1) = (0, 4)
    weights_a = _ticket_weights(model, [2, 9], [1, 0])
    weights_b = _ticket_weights(model, [7, 4], [0, 1])
    x = np.ones((1, 2), np.float32)

    def output(m):
        return float(m(x)[0, 0])

    result = interpolate(model, weights_a, weights_b, output, num_points=3)
    np.testing.assert_allclose(result["alpha"], [0.0, 0.5, 1.0])
    # midpoint kernel (1, 2): output 3 (interpolating raw kernel and mask apart would give 5.5)
    np.testing.assert_allclose(result["value"], [2.0, 3.0, 4.0])
    assert len(interpolate(model, weights_a, weights_b, output)["value"]) == 20
    # the model's own weights come back
    for got, want in zip(model.get_weights(), weights_b):
        np.testing.assert_array_equal(got, want)


def test_ends_may_be_weights_files(tmp_path):
    model = _linear_ticket()
    weights_a = _ticket_weights(model, [2, 9], [1, 0])
    model.save_weights(str(tmp_path / "a.weights.h5"))
    weights_b = _ticket_weights(model, [7, 4], [0, 1])
    x = np.ones((1, 2), np.float32)
    result = interpolate(model, str(tmp_path / "a.weights.h5"), weights_b,
                         lambda m: float(m(x)[0, 0]), num_points=3)
    np.testing.assert_allclose(result["value"], [2.0, 3.0, 4.0])
    for got, want in zip(model.get_weights(), weights_b):
        np.testing.assert_array_equal(got, want)


def _bn_classifier():
    return keras.Sequential([keras.Input((3,)), MaskedDense(6, name="h"),
                             keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
                             keras.layers.Dense(3, name="out")])


def test_endpoints_reproduce_each_model_own_evaluation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    eval_fn = classification_eval_fn((x, y))
    model = _bn_classifier()
    model.get_layer("h").mask.assign((rng.random((3, 6)) > 0.4).astype(np.float32))
    model(x, training=True)  # moves the BatchNorm statistics
    weights_a = model.get_weights()
    own_a = eval_fn(model)
    for v in model.trainable_variables:
        v.assign(v.numpy() + rng.standard_normal(v.shape).astype(np.float32))
    model.get_layer("h").mask.assign((rng.random((3, 6)) > 0.4).astype(np.float32))
    model(x, training=True)
    weights_b = model.get_weights()
    own_b = eval_fn(model)
    assert own_a["loss"] != pytest.approx(own_b["loss"])
    result = interpolate(model, weights_a, weights_b, eval_fn, num_points=4)
    for name in ("loss", "error"):
        assert result[name][0] == pytest.approx(own_a[name], rel=1e-5)
        assert result[name][-1] == pytest.approx(own_b[name], rel=1e-5)
    assert 0.0 <= result["error"].min() and result["error"].max() <= 1.0


def test_batchnorm_statistics_are_the_average_over_reset_batches():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, name="d"),
                              keras.layers.BatchNormalization(center=False, scale=False,
                                                              name="bn")])
    model.get_layer("d").kernel.assign([[2.0]])
    weights_a = model.get_weights()
    model.get_layer("d").kernel.assign([[4.0]])
    weights_b = model.get_weights()
    batches = [np.array([[1.0], [3.0]], np.float32), (np.array([[5.0], [5.0]], np.float32), None)]

    def stats(m):
        bn = m.get_layer("bn")
        return {"mean": float(bn.moving_mean.numpy()[0]),
                "variance": float(bn.moving_variance.numpy()[0])}

    result = interpolate(model, weights_a, weights_b, stats, num_points=3, bn_reset_data=batches)
    # kernel 3 at the midpoint: batch outputs (3, 9) and (15, 15): means 6, 15; variances 9, 0
    np.testing.assert_allclose(result["mean"], [(4 + 10) / 2, (6 + 15) / 2, (8 + 20) / 2],
                               rtol=1e-6)
    np.testing.assert_allclose(result["variance"], [(4 + 0) / 2, (9 + 0) / 2, (16 + 0) / 2],
                               rtol=1e-6)
    assert model.get_layer("bn").momentum == 0.99
    without = interpolate(model, weights_a, weights_b, stats, num_points=3)
    np.testing.assert_allclose(without["mean"], 0.0)  # never trained: stats stay interpolated


def test_scores_rules_cannot_be_interpolated():
    model = keras.Sequential([keras.Input((2,)), MaskedDense(2, mask_rule=TopKScores(0.5))])
    weights = model.get_weights()
    with pytest.raises(ConfigError):
        interpolate(model, weights, weights, lambda m: 0.0)
