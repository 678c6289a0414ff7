import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.errors import ConfigError
from tf_lottery.layers import MaskedDense, get_rule, masked_layers
from tf_lottery.models import sparsify
from tf_lottery.sparsity import (NMMagnitudePruning, NMMask, is_n_m_sparse, n_m_mask,
                                 prune_low_magnitude)
from tf_lottery.training.sparse_model import SparseModel


def test_2_4_keeps_the_two_largest_of_each_group_of_four_input_rows():
    # an (8, 1) Dense kernel: two groups of four rows; ties (0.5, 0.5, -0.5) go to the earlier
    kernel = np.array([[.1], [-.4], [.3], [.2], [.5], [.5], [-.5], [0.]], np.float32)
    mask = n_m_mask(kernel, 2, 4).numpy()
    np.testing.assert_array_equal(mask.ravel(), [0, 1, 1, 0, 1, 1, 0, 0])
    assert mask.dtype == np.float32
    # a (4, 2) kernel: one group per column, |w| = 1..8 row-major, so rows 2 and 3 win
    kernel = (np.arange(1, 9, dtype=np.float32) * np.array([1, -1] * 4)).reshape(4, 2)
    np.testing.assert_array_equal(n_m_mask(kernel, 2, 4).numpy(),
                                  [[0, 0], [0, 0], [1, 1], [1, 1]])
    # groups run down the input rows, never across the output columns
    column_sorted = np.array([[4., 1.], [3., 2.], [2., 3.], [1., 4.]], np.float32)
    np.testing.assert_array_equal(n_m_mask(column_sorted, 1, 4).numpy(),
                                  [[1, 0], [0, 0], [0, 0], [0, 1]])


def test_a_1x8_kernel_has_groups_of_one_input_and_stays_dense():
    # in = 1 < m: each group is a remainder of one weight, which keeps min(n, 1) = 1
    kernel = np.arange(8, dtype=np.float32).reshape(1, 8) + 1
    np.testing.assert_array_equal(n_m_mask(kernel, 2, 4).numpy(), np.ones((1, 8)))
    # along axis=-1 it is two groups of 4 in a row
    np.testing.assert_array_equal(n_m_mask(kernel, 2, 4, axis=-1).numpy(),
                                  [[0, 0, 1, 1, 0, 0, 1, 1]])


def test_remainder_group_keeps_at_most_n_of_its_weights():
    # 7 rows, 2:4: group [1, 4, 2, 3] keeps 4, 3; remainder [9, 5, 7] keeps its 2 largest
    kernel = np.array([1, 4, 2, 3, 9, 5, 7], np.float32).reshape(7, 1)
    np.testing.assert_array_equal(n_m_mask(kernel, 2, 4).numpy().ravel(), [0, 1, 0, 1, 1, 0, 1])
    # a remainder no longer than n stays dense
    kernel = np.array([1, 4, 2, 3, 9, 5], np.float32).reshape(6, 1)
    np.testing.assert_array_equal(n_m_mask(kernel, 2, 4).numpy().ravel(), [0, 1, 0, 1, 1, 1])
    assert is_n_m_sparse(kernel * n_m_mask(kernel, 2, 4).numpy(), 2, 4)
    assert not is_n_m_sparse(np.ones((7, 1)) * [[1], [0], [0], [0], [1], [1], [1]], 2, 4)


def test_conv_kernel_groups_along_the_input_channels():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 8, 5)).astype(np.float32)
    mask = n_m_mask(kernel, 2, 4).numpy()
    groups = mask.reshape(3, 3, 2, 4, 5)  # (kh, kw, group, position, out)
    np.testing.assert_array_equal(groups.sum(axis=3), 2)
    magnitude = np.abs(kernel).reshape(3, 3, 2, 4, 5)
    kept_min = np.where(groups == 1, magnitude, np.inf).min(axis=3)
    pruned_max = np.where(groups == 0, magnitude, -np.inf).max(axis=3)
    assert np.all(kept_min >= pruned_max)
    assert is_n_m_sparse(kernel * mask, 2, 4)
    # grouped along the input channels, not along the output channels
    assert not is_n_m_sparse(kernel * mask, 2, 4, axis=-1)


def test_is_n_m_sparse_true_and_false_cases():
    assert is_n_m_sparse(np.zeros((8, 3)), 2, 4)
    assert is_n_m_sparse(np.array([[1.], [0.], [2.], [0.]]), 2, 4)
    assert not is_n_m_sparse(np.array([[1.], [3.], [2.], [0.]]), 2, 4)  # 3 of 4
    assert is_n_m_sparse(np.array([[1.], [3.], [2.], [0.]]), 3, 4)
    assert is_n_m_sparse(tf.constant([[1.], [0.], [0.], [0.]]), 1, 4)
    result = is_n_m_sparse(np.ones((4, 4)), 4, 4)
    assert result is True


@pytest.mark.parametrize("n, m, argument", [(3, 2, "n must be <= m"), (0, 4, "n must be"),
                                            (2, 0, "m must be"), (2.5, 4, "n must be"),
                                            (True, 4, "n must be")])
def test_bad_n_or_m_is_one_config_error_naming_it(n, m, argument):
    kernel = np.ones((4, 1))
    for call in (lambda: n_m_mask(kernel, n, m), lambda: is_n_m_sparse(kernel, n, m),
                 lambda: NMMask(n, m), lambda: NMMagnitudePruning(n, m)):
        with pytest.raises(ConfigError, match=argument):
            call()
    with pytest.raises(ConfigError, match="axis"):
        n_m_mask(np.ones(4), 2, 4)  # a 1-D weight has no axis -2
    with pytest.raises(ConfigError, match="sr_ste_lambda"):
        NMMask(2, 4, sr_ste_lambda=-1.0)


def test_sr_ste_gradient_is_straight_through_plus_lambda_times_pruned_weights():
    layer = MaskedDense(1, use_bias=False, mask_rule=NMMask(2, 4, sr_ste_lambda=0.5))
    layer.build((None, 4))
    w = np.array([[.1], [-.4], [.3], [.2]], np.float32)
    layer.raw_kernel.assign(w)
    x = tf.constant([[1., 2., 3., 4.]])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(x, training=True))
    grad = tape.gradient(y, layer.raw_kernel).numpy()
    # forward: m = [0, 1, 1, 0]; y = -0.4·2 + 0.3·3
    assert float(y) == pytest.approx(-0.8 + 0.9)
    # backward: ∂L/∂W̃ = x (every weight, straight through) + 0.5·(1 − m)·W
    np.testing.assert_allclose(grad.ravel(), [1 + 0.05, 2, 3, 4 + 0.1], rtol=1e-6)
    # plain STE (λ = 0): x everywhere; an edge the layer's mask removed gets nothing
    layer.mask_rule = NMMask(2, 4)
    layer.mask.assign([[1.], [1.], [0.], [1.]])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(x, training=True))
    np.testing.assert_allclose(tape.gradient(y, layer.raw_kernel).numpy().ravel(), [1, 2, 0, 4])
    assert float(y) == pytest.approx(-0.8 + 0.2 * 4)  # 0.3 is not allowed: -0.4 and 0.2 kept
    np.testing.assert_array_equal(layer.binary_mask().numpy().ravel(), [0, 1, 0, 1])


def test_nm_mask_rule_recomputes_every_step_and_survives_a_keras_round_trip(tmp_path):
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(3, name="out")(keras.layers.Dense(4, name="fc")(inputs))
    network = sparsify(keras.Model(inputs, outputs), rule=NMMask(2, 4, sr_ste_lambda=2e-4))
    rule = get_rule(keras.saving.serialize_keras_object(network.get_layer("fc").mask_rule))
    assert isinstance(rule, NMMask) and rule.get_config()["sr_ste_lambda"] == 2e-4
    model = SparseModel(network)
    model.compile(keras.optimizers.SGD(0.5), "mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 8)).astype("f"), rng.normal(size=(32, 3)).astype("f")
    before = network.get_layer("fc").raw_kernel.numpy().copy()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for layer in masked_layers(network):
        assert is_n_m_sparse(layer.kernel, 2, 4)
        np.testing.assert_array_equal(layer.binary_mask().numpy(),
                                      n_m_mask(layer.raw_kernel, 2, 4).numpy())
    # pruned weights train too (straight through): every raw weight moved
    assert np.all(network.get_layer("fc").raw_kernel.numpy() != before)
    path = str(tmp_path / "nm.keras")
    network.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("fc").mask_rule, NMMask)
    assert loaded.get_layer("fc").mask_rule.get_config() == rule.get_config()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), network.predict(x, verbose=0),
                               rtol=1e-6)


@pytest.mark.parametrize("use_tfmot_name", [False, True])
def test_engine_prunes_to_exactly_n_m_at_the_scheduled_step_during_fit(use_tfmot_name):
    inputs = keras.Input((8,))
    base = keras.Model(inputs, keras.layers.Dense(4, name="out")(
        keras.layers.Dense(8, name="fc")(inputs)))
    begin = 1 if use_tfmot_name else 3
    if use_tfmot_name:
        model = prune_low_magnitude(base, sparsity_m_by_n=(2, 4))  # tfmot: 2 zeros of 4
    else:
        model = SparseModel(sparsify(base))
        model.add_mask_updater(NMMagnitudePruning(2, 4, begin_step=begin))
    model.compile(keras.optimizers.SGD(0.0), "mse")  # weights stay put
    initial = {layer.name: layer.raw_kernel.numpy() for layer in masked_layers(model)}
    densities = []
    log = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: densities.append(
        [float(np.mean(layer.mask.numpy())) for layer in masked_layers(model)]))
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(32, 8)).astype("f"), rng.normal(size=(32, 4)).astype("f"),
              batch_size=8, shuffle=False, verbose=0, callbacks=[log])
    assert densities == [[1.0, 1.0]] * (begin - 1) + [[0.5, 0.5]] * (5 - begin)
    for layer in masked_layers(model):
        np.testing.assert_array_equal(layer.mask.numpy(),
                                      n_m_mask(initial[layer.name], 2, 4).numpy())
        assert is_n_m_sparse(layer.kernel, 2, 4)


def test_sparsity_m_by_n_bad_input_is_a_config_error():
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ConfigError, match="sparsity_m_by_n"):
        prune_low_magnitude(base, sparsity_m_by_n=(4, 4))
    with pytest.raises(ConfigError, match="sparsity_m_by_n"):
        prune_low_magnitude(base, sparsity_m_by_n=(2, 4), block_size=(2, 2))
