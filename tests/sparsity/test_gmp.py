import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.layers import MaskedLayerMixin, masked_layers
from tf_lottery.sparsity import (ConstantSparsity, GradualMagnitudePruning, MaskUpdater,
                                 PolynomialDecay, PruningSummaries, UpdatePruningStep,
                                 keep_count, layer_densities, magnitude_mask,
                                 prune_low_magnitude, strip_pruning)
from tf_lottery.training.sparse_model import SparseModel

BATCH = 8


def _base(conv=False):
    inputs = keras.Input((6, 6, 1) if conv else (12,))
    x = inputs
    if conv:
        x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
        x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


def _data(steps, conv=False):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * BATCH,) + ((6, 6, 1) if conv else (12,))).astype("float32")
    return x, rng.integers(0, 3, steps * BATCH)


def _compile(model, jit_compile=False, optimizer=None):
    model.compile(optimizer or keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)


class _MaskLog(keras.callbacks.Callback):
    """Each masked layer's sparsity after every batch."""

    def on_train_begin(self, logs=None):
        self.sparsity = []

    def on_train_batch_end(self, batch, logs=None):
        self.sparsity.append({layer.name: 1.0 - float(np.mean(layer.mask.numpy()))
                              for layer in masked_layers(self.model)})


def _expected(schedule, step, size):
    """Sparsity of a layer of `size` weights after step `step` under the schedule."""
    updates = [t for t in range(1, step + 1) if bool(schedule.should_prune(t))]
    if not updates:
        return 0.0
    return 1.0 - int(keep_count(size, schedule.sparsity_at(updates[-1]))) / size


def test_masks_follow_the_polynomial_schedule_step_by_step_with_plain_fit():
    schedule = PolynomialDecay(0.0, 0.8, begin_step=2, end_step=8, frequency=2)
    model = prune_low_magnitude(_base(), pruning_schedule=schedule)
    _compile(model)
    log = _MaskLog()
    x, y = _data(10)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[log, UpdatePruningStep()])
    sizes = {"fc": 12 * 16, "out": 16 * 3}
    for step, observed in enumerate(log.sparsity, start=1):
        for name, size in sizes.items():
            assert observed[name] == pytest.approx(_expected(schedule, step, size)), (step, name)
    assert log.sparsity[-1]["fc"] == pytest.approx(0.8, abs=0.01)
    # pruned weights are zero in the effective kernel
    for layer in masked_layers(model):
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        assert np.all(kernel[layer.mask.numpy() == 0] == 0)


def test_the_kth_batch_is_step_k_and_prunes_before_its_forward_pass():
    # tfmot's pruning_step: the first batch is step 1. begin_step=3: two batches stay dense.
    model = prune_low_magnitude(_base(), ConstantSparsity(0.5, begin_step=3, frequency=100))
    _compile(model, optimizer=keras.optimizers.SGD(0.0))  # weights stay put
    x, y = _data(3)
    log = _MaskLog()
    initial = {layer.name: layer.raw_kernel.numpy() for layer in masked_layers(model)}
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[log])
    assert [entry["fc"] for entry in log.sparsity] == [0.0, 0.0, 0.5]
    for layer in masked_layers(model):
        np.testing.assert_array_equal(layer.mask.numpy(),
                                      magnitude_mask(initial[layer.name], 0.5).numpy())


def test_pruning_under_jit_compile_gives_the_rule_s_masks():
    model = prune_low_magnitude(_base(), PolynomialDecay(0.0, 0.6, 1, 3, frequency=2),
                                exclude=["out"], block_size=(4, 2))
    _compile(model, jit_compile=True, optimizer=keras.optimizers.SGD(0.0))  # weights stay put
    layer = model.network.get_layer("fc")
    initial = layer.raw_kernel.numpy()
    x, y = _data(3)
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)
    assert model.jit_compile is True
    expected = magnitude_mask(initial, 0.6, block_size=(4, 2)).numpy()
    assert expected.sum() == 10 * 4 * 2  # 24 blocks of 4x2, keep round(24 * 0.4) = 10
    np.testing.assert_array_equal(layer.mask.numpy(), expected)


def test_erk_distribution_reaches_the_layer_targets_and_the_global_one():
    model = prune_low_magnitude(_base(conv=True),
                                ConstantSparsity(0.7, begin_step=1, frequency=1),
                                distribution="erk", exclude=["out"])
    _compile(model)
    x, y = _data(2, conv=True)
    model.fit(x, y, batch_size=BATCH, verbose=0)
    targets = layer_densities(_base(conv=True), 0.7, "erk", exclude=["out"])
    layers = {layer.name: layer for layer in masked_layers(model)}
    assert sorted(layers) == ["conv", "fc"]  # `out` stays a plain Dense
    kept = total = 0
    for name, density in targets.items():
        mask = layers[name].mask.numpy()
        assert mask.mean() == pytest.approx(density, abs=1.0 / mask.size)
        kept, total = kept + mask.sum(), total + mask.size
    assert kept / total == pytest.approx(0.3, abs=0.01)


def test_global_distribution_ranks_all_layers_together():
    model = prune_low_magnitude(_base(), ConstantSparsity(0.5, begin_step=1, frequency=100),
                                distribution="global")
    _compile(model, optimizer=keras.optimizers.SGD(0.0))
    fc, out = model.network.get_layer("fc"), model.network.get_layer("out")
    out.raw_kernel.assign(out.raw_kernel * 100.0)  # `out` wins every comparison
    x, y = _data(1)
    model.fit(x, y, batch_size=BATCH, verbose=0)
    assert out.mask.numpy().mean() == 1.0
    assert fc.mask.numpy().sum() == round(0.5 * (192 + 48)) - 48


def test_block_sparsity_prunes_whole_blocks():
    model = prune_low_magnitude(_base(), ConstantSparsity(0.5, begin_step=1, frequency=1),
                                block_size=(4, 2), exclude=["out"])
    _compile(model)
    x, y = _data(2)
    model.fit(x, y, batch_size=BATCH, verbose=0)
    mask = masked_layers(model)[0].mask.numpy()
    blocks = mask.reshape(3, 4, 8, 2)
    assert np.all(blocks.min(axis=(1, 3)) == blocks.max(axis=(1, 3)))
    assert mask.mean() == 0.5


def test_strip_pruning_gives_plain_keras_layers_and_the_same_outputs():
    model = prune_low_magnitude(_base(conv=True), ConstantSparsity(0.6, 1, frequency=1))
    _compile(model, jit_compile=False)
    x, y = _data(3, conv=True)
    model.fit(x, y, batch_size=BATCH, verbose=0)
    plain = strip_pruning(model)
    layers = compat.sublayers(plain)
    assert all(type(layer).__module__.startswith("keras.") for layer in layers)
    assert not any(isinstance(layer, MaskedLayerMixin) for layer in layers)
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    kernel = plain.get_layer("fc").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.6, abs=0.01)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_fit_prunes_to_the_target(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = prune_low_magnitude(_base(), PolynomialDecay(0.2, 0.75, 1, 3, frequency=1),
                                    exclude=["out"])
        probe = _DenseGradientProbe(exclude=["out"])
        model.add_mask_updater(probe)
        _compile(model)
        x, y = _data(3)
        model.fit(x, y, batch_size=BATCH, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.network.get_layer("fc").mask.numpy().mean() == pytest.approx(0.25, abs=0.01)
    # the dense gradient is unscaled (mixed_float16's loss scale is 2^15)
    seen = np.abs(probe.seen.numpy())
    assert 0 < seen.max() < 10


def _fresh(schedule):
    keras.utils.set_random_seed(3)
    model = prune_low_magnitude(_base(), schedule, exclude=["out"])
    _compile(model)
    return model


def test_resuming_from_a_checkpoint_mid_schedule_gives_the_same_masks(tmp_path):
    schedule = PolynomialDecay(0.0, 0.8, begin_step=1, end_step=4, frequency=1)
    x, y = _data(4)
    whole = _fresh(schedule)
    whole.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)

    first = _fresh(schedule)
    first.fit(x[:2 * BATCH], y[:2 * BATCH], batch_size=BATCH, shuffle=False, verbose=0)
    path = tf.train.Checkpoint(model=first, optimizer=first.optimizer).save(
        str(tmp_path / "ckpt"))
    resumed = _fresh(schedule)
    resumed.optimizer.build(resumed.trainable_variables)
    tf.train.Checkpoint(model=resumed, optimizer=resumed.optimizer).restore(path)
    assert int(resumed.optimizer.iterations.numpy()) == 2
    resumed.fit(x[2 * BATCH:], y[2 * BATCH:], batch_size=BATCH, shuffle=False, verbose=0)
    a, b = whole.network.get_layer("fc"), resumed.network.get_layer("fc")
    assert a.mask.numpy().sum() == int(keep_count(12 * 16, 0.8))  # the schedule's end reached
    np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())
    np.testing.assert_array_equal(a.raw_kernel.numpy(), b.raw_kernel.numpy())


def _scalars(log_dir):
    values = {}
    for path in glob.glob(os.path.join(log_dir, "metrics", "events*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor))
                values.setdefault(value.tag, []).append((event.step, number))
    return values


def test_pruning_summaries_write_layer_sparsity_and_the_target_per_step(tmp_path):
    schedule = PolynomialDecay(0.0, 0.5, begin_step=1, end_step=3, frequency=1)
    model = prune_low_magnitude(_base(), schedule)
    _compile(model)
    x, y = _data(4)
    model.fit(x, y, batch_size=BATCH, verbose=0,
              callbacks=[PruningSummaries(str(tmp_path), update_freq="batch")])
    values = _scalars(str(tmp_path))
    assert [step for step, _ in values["sparsity"]] == [1, 2, 3, 4, 4]
    target = dict(values["sparsity"])
    assert target[2] == pytest.approx(float(schedule.sparsity_at(2)))
    fc = dict(values["fc/sparsity"])
    assert fc[4] == pytest.approx(0.5) and fc[1] == pytest.approx(0.0)
    assert "out/sparsity" in values


@pytest.mark.parametrize("kwargs, argument", [
    (dict(exclude=["nope"]), "exclude"),
    (dict(distribution="erdos"), "distribution"),
    (dict(block_size=(2, 0)), "block_size"),
    (dict(block_pooling_type="SUM"), "block_pooling_type"),
    (dict(pruning_schedule=0.5), "pruning_schedule"),
])
def test_bad_input_to_prune_low_magnitude_is_one_config_error(kwargs, argument):
    with pytest.raises(ConfigError, match=argument):
        prune_low_magnitude(_base(), **kwargs)


def test_an_updater_excluding_a_layer_the_model_lacks_is_a_config_error():
    network = prune_low_magnitude(_base(), ConstantSparsity(0.5, 1)).network
    updater = GradualMagnitudePruning(ConstantSparsity(0.5, 1), exclude=["nope"])
    with pytest.raises(ConfigError, match="exclude"):
        SparseModel(network).add_mask_updater(updater)


class _DenseGradientProbe(MaskUpdater):
    """Records ∂L/∂(θ ⊙ m) of the first layer at step 2 (an updater that asks for gradients)."""

    needs_dense_gradients = True

    def build(self, model):
        super().build(model)
        self.seen = tf.Variable(tf.zeros(self.layers[0].mask.shape))
        self.calls = tf.Variable(0)

    def is_update_step(self, step):
        return tf.equal(step, 2)

    def update(self, step, dense_gradients=None):
        self.seen.assign(dense_gradients[self.layers[0].name])
        self.calls.assign_add(1)


def test_updater_gets_the_dense_kernel_gradient_at_its_update_steps_only():
    network = prune_low_magnitude(_base(), ConstantSparsity(0.5, 1, frequency=100)).network
    mask = (np.arange(12 * 16).reshape(12, 16) % 3 != 0).astype("float32")
    masked_layers(network)[0].mask.assign(mask)
    model = SparseModel(network)
    probe = _DenseGradientProbe()
    model.add_mask_updater(probe)
    _compile(model, optimizer=keras.optimizers.SGD(0.1))
    x, y = _data(3)
    # the expected gradient at step 2: after one step, w.r.t. the effective kernel
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0)
    layer = masked_layers(network)[0]
    effective = tf.Variable(keras.ops.convert_to_numpy(layer.kernel))
    with tf.GradientTape() as tape:  # kernel + (e - e): the value stays, ∂/∂e is ∂L/∂(θ ⊙ m)
        object.__setattr__(layer, "_dense_gradient_probe", effective - tf.stop_gradient(
            effective))
        try:
            loss = model.compute_loss(x[BATCH:2 * BATCH], y[BATCH:2 * BATCH],
                                      model(x[BATCH:2 * BATCH], training=True))
        finally:
            object.__setattr__(layer, "_dense_gradient_probe", None)
    expected = tape.gradient(loss, effective).numpy()
    model.fit(x[BATCH:], y[BATCH:], batch_size=BATCH, shuffle=False, verbose=0)
    assert int(probe.calls.numpy()) == 1
    seen = probe.seen.numpy()
    assert np.all(seen[mask == 0] != 0)  # dense: also where the mask is 0
    np.testing.assert_allclose(seen, expected, rtol=1e-4, atol=1e-6)


def test_an_updater_exclude_takes_patterns_as_masks_excluded_names_does():
    from tf_lottery.models import sparsify

    network = sparsify(_base(conv=True))
    updater = GradualMagnitudePruning(ConstantSparsity(0.5, begin_step=0),
                                      exclude=["f*", "*_shortcut"])  # one match, one none
    SparseModel(network).add_mask_updater(updater)
    assert [layer.name for layer in updater.layers] == ["conv", "out"]
