"""Dynamic sparse training (tf_lottery.sparsity.dst): the drop-and-grow rules on hand cases, the
drop-fraction schedule, and the updaters in a real tiny fit (grown weights and optimizer state
zero, exact counts, no update after T_end)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.errors import ConfigError
from tf_lottery.layers import MaskedDense
from tf_lottery.layers.mask_rules import get_rule
from tf_lottery.sparsity import (RigL, SparseEvolutionaryTraining, StaticSparse,
                                 layer_densities, random_sparse_mask, rigl_update, set_update)
from tf_lottery.training.sparse_model import SparseModel

# 4 active positions (0, 1, 3, 4) with |w| .4 .1 .3 .1; position 7 is inactive with a large
# raw value, which must not count.
W = np.array([0.4, -0.1, 0.0, 0.3, 0.1, 0.0, 0.0, 0.7], np.float32)
M = np.array([1, 1, 0, 1, 1, 0, 0, 0], np.float32)
# inactive positions 2 and 5 tie at |g| = .2; position 4 (about to be dropped) has the largest
G = np.array([0.0, 0.0, 0.2, 0.0, 5.0, -0.2, 0.1, 0.0], np.float32)


def test_rigl_drops_the_smallest_active_keeps_the_earlier_of_a_tie_and_grows_the_largest_grad():
    # ζ = .25: ⌊.25·4⌋ = 1 dropped; positions 1 and 4 tie at |w| = .1: the earlier (1) stays, 4
    # goes. Grow 1 by |g| among positions inactive before: 2 and 5 tie at .2: the earlier, 2.
    new = rigl_update(W, M, G, 0.25).numpy()
    np.testing.assert_array_equal(new, [1, 1, 1, 1, 0, 0, 0, 0])
    # the reference code's rule: the just-dropped position 4 (|g| = 5) is grown straight back
    again = rigl_update(W, M, G, 0.25, regrow_dropped=True).numpy()
    np.testing.assert_array_equal(again, M)


def test_rigl_drop_count_is_the_floor_of_the_fraction_of_active_weights():
    for fraction, dropped in [(0.0, 0), (0.24, 0), (0.3, 1), (0.49, 1), (0.5, 2), (0.75, 3),
                              (1.0, 4)]:
        new = rigl_update(W, M, G, fraction).numpy()
        assert new.sum() == 4, fraction
        assert int(((M == 1) & (new == 0)).sum()) == dropped, fraction
    # ζ = .5: both |w| = .1 dropped; grown: 2 and 5 (|g| .2, over 6's .1)
    np.testing.assert_array_equal(rigl_update(W, M, G, 0.5).numpy(), [1, 0, 1, 1, 0, 1, 0, 0])
    # a 3x1 kernel (shape kept) with 1 inactive position: ζ = 1 can move only that one
    new = rigl_update(np.array([[0.3], [0.2], [0.0]]), np.array([[1], [1], [0]]),
                      np.zeros((3, 1)), 1.0).numpy()
    np.testing.assert_array_equal(new, [[1], [0], [1]])


def test_set_drops_by_magnitude_grows_at_random_reproducibly_never_where_it_just_dropped():
    # ζ = 1 with as many inactive as active positions: every active goes, every inactive grows
    np.testing.assert_array_equal(set_update(W, M, 1.0, seed=0).numpy(), 1 - M)
    grown_sets = set()
    for seed in range(12):
        new = set_update(W, M, 0.5, seed=[seed, 3]).numpy()
        assert new.sum() == 4
        np.testing.assert_array_equal(new[[0, 3]], [1, 1])  # the two largest |w| stay
        assert new[1] == 0 and new[4] == 0  # dropped and not regrown
        grown_sets.add(tuple(np.flatnonzero(new * (1 - M))))
        np.testing.assert_array_equal(new, set_update(W, M, 0.5, seed=[seed, 3]).numpy())
    assert len(grown_sets) > 2  # the seed chooses among the 6 pairs of {2, 5, 6, 7}
    assert all(set(pair) <= {2, 5, 6, 7} for pair in grown_sets)


def test_random_sparse_mask_has_exactly_the_target_count():
    for density, ones in [(0.1, 2), (0.3, 6), (0.5, 10), (0.01, 1), (1.0, 20)]:
        mask = random_sparse_mask((4, 5), density, seed=[0, 1]).numpy()
        assert mask.sum() == ones, density  # max(1, round(20·density))


def _schedule(decay="cosine"):
    return SparseEvolutionaryTraining(update_interval=10, end_step=100, drop_fraction=0.3,
                                      drop_fraction_decay=decay)


def test_cosine_drop_fraction_and_update_steps():
    updater = _schedule()
    values = [float(updater.drop_fraction_at(t)) for t in (0, 50, 100, 101, 200)]
    np.testing.assert_allclose(values, [0.3, 0.15, 0.0, 0.0, 0.0], atol=1e-7)
    assert float(updater.drop_fraction_at(25)) == pytest.approx(0.15 * (1 + np.cos(np.pi / 4)))
    assert float(_schedule("constant").drop_fraction_at(90)) == pytest.approx(0.3)
    assert float(_schedule("constant").drop_fraction_at(110)) == 0.0
    steps = [t for t in range(1, 131) if bool(updater.is_update_step(t))]
    assert steps == list(range(10, 101, 10))


def _net(mask_rule=None):
    inputs = keras.Input((10,))
    x = MaskedDense(12, activation="relu", name="fc", mask_rule=mask_rule)(inputs)
    return keras.Model(inputs, MaskedDense(3, name="out", mask_rule=mask_rule)(x))


class _Snapshots(keras.callbacks.Callback):
    """Per batch: every mask, raw kernel, and optimizer variable shaped like a kernel."""

    def on_train_batch_end(self, batch, logs=None):
        shapes = {}
        for variable in self.model.optimizer.variables:
            shapes.setdefault(tuple(variable.shape), []).append(variable.numpy())
        self.records = getattr(self, "records", [])
        self.records.append({layer.name: (layer.mask.numpy(), layer.raw_kernel.numpy(),
                                          shapes[tuple(layer.mask.shape)])
                             for layer in (self.model.network.get_layer("fc"),
                                           self.model.network.get_layer("out"))})


def _fit(updater, optimizer, steps=6):
    model = SparseModel(_net())
    model.add_mask_updater(updater)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)
    optimizer.build(model.trainable_variables)
    for variable in optimizer.variables:  # nonzero optimizer state everywhere to begin with
        if len(variable.shape) == 2:
            variable.assign(tf.ones(variable.shape))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8 * steps, 10)).astype("float32"), rng.integers(0, 3, 8 * steps)
    snapshots = _Snapshots()
    initial = {layer.name: layer.mask.numpy() for layer in updater.layers}
    model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[snapshots])
    return updater, initial, snapshots.records


@pytest.fixture(scope="module")
def fits():
    """RigL with SGD + momentum, SET with Adam: ΔT = 2, T_end = 4, 6 steps (eager: no tracing)."""
    options = dict(sparsity=0.7, distribution="erk", update_interval=2, end_step=4,
                   drop_fraction=0.5, drop_fraction_decay="constant", seed=3)
    runs = {"rigl_sgd": _fit(RigL(**options), keras.optimizers.SGD(0.1, momentum=0.9)),
            "set_adam": _fit(SparseEvolutionaryTraining(**options),
                             keras.optimizers.Adam(0.01))}
    return {name: (updater.target_counts(), updater.summary(), initial, records)
            for name, (updater, initial, records) in runs.items()}


@pytest.mark.parametrize("run", ["rigl_sgd", "set_adam"])
def test_updates_move_weights_at_steps_2_and_4_keeping_every_count(fits, run):
    counts, summary, initial, records = fits[run]
    assert counts == {name: int(round(mask.sum())) for name, mask in initial.items()}
    densities = layer_densities(SparseModel(_net()).network, 0.7, "erk")
    for name, count in counts.items():
        assert count == max(1, round(initial[name].size * densities[name]))
    previous = initial
    for step, record in enumerate(records, start=1):
        changed = any(np.any(record[n][0] != previous[n]) for n in counts)
        assert changed == (step in (2, 4)), step  # ΔT = 2, none after T_end = 4
        for name, count in counts.items():
            assert record[name][0].sum() == count, (step, name)
        previous = {n: record[n][0] for n in counts}
    assert summary["dst/updates"] == 2
    assert summary["dst/moved"] > 0 and summary["dst/moved_total"] >= summary["dst/moved"]
    assert summary["dst/drop_fraction"] == pytest.approx(0.5)
    ever = {name: np.maximum.reduce([initial[name]] + [r[name][0] for r in records])
            for name in counts}
    total = sum(mask.size for mask in initial.values())
    assert summary["dst/ever_active_fraction"] == pytest.approx(
        sum(mask.sum() for mask in ever.values()) / total)
    assert summary["dst/ever_active_fraction"] > sum(counts.values()) / total


def test_rigl_grown_weights_and_their_optimizer_state_start_at_zero(fits):
    # RigL updates after the backward pass: a grown weight had mask 0 in that step, so its
    # gradient is zero and the step's optimizer update keeps it (and its reset state) at zero
    _, _, initial, records = fits["rigl_sgd"]
    for step in (2, 4):
        after = records[step - 1]
        for name in after:
            old = initial[name] if step == 2 else records[step - 2][name][0]
            new = after[name][0]
            grown = (new == 1) & (old == 0)
            assert grown.any()
            assert np.all(after[name][1][grown] == 0), (step, name)
            assert after[name][2], name  # the momentum
            for slot in after[name][2]:
                assert np.all(slot[grown] == 0), (step, name)
            # the optimizer state of positions that stayed inactive was not reset
            stayed = (new == 0) & (old == 0)
            assert all(np.all(slot[stayed] != 0) for slot in after[name][2])


def test_set_grown_weights_start_at_zero_and_train_from_reset_adam_state(fits):
    # SET updates before the forward pass: a grown weight starts at 0 with m = v = 0 and takes
    # that step's gradient, so afterwards m = 0.1·g, v = 0.001·g² (Adam's first step); without
    # the reset they would hold 0.9² and 0.999² of the initial ones (decayed, zero gradient)
    _, _, initial, records = fits["set_adam"]
    grown = (records[1]["fc"][0] == 1) & (records[0]["fc"][0] == 0)
    assert grown.any() and np.any(records[1]["fc"][1][grown] != 0)  # trained in its step
    assert np.all(np.abs(records[1]["fc"][1][grown]) < 0.011)  # from 0: one Adam step of 0.01
    m, v = records[1]["fc"][2]
    assert np.all(np.abs(m[grown]) < 0.5) and np.all(v[grown] < 0.5)
    stayed = (records[1]["fc"][0] == 0) & (records[0]["fc"][0] == 0)
    np.testing.assert_allclose(m[stayed], 0.81, rtol=1e-5)


def _set_model(optimizer):
    model = SparseModel(_net())
    updater = SparseEvolutionaryTraining(sparsity=0.8, distribution="uniform", update_interval=3,
                                         end_step=14, drop_fraction=0.5, seed=5)
    model.add_mask_updater(updater)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)
    optimizer.build(model.trainable_variables)
    return model, updater


def test_set_resumed_from_a_checkpoint_draws_the_masks_of_an_uninterrupted_run(tmp_path):
    # fit_round's checkpoint (model + optimizer) after step 8, then steps 9..16 (updates at
    # 9 and 12) once in the same run and once in a fresh model restored from the checkpoint
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(128, 10)).astype("float32"), rng.integers(0, 3, 128)
    model, updater = _set_model(keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(x[:64], y[:64], batch_size=8, shuffle=False, verbose=0)
    path = tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(
        str(tmp_path / "ckpt"))
    model.fit(x[64:], y[64:], batch_size=8, shuffle=False, verbose=0)
    fresh, resumed = _set_model(keras.optimizers.SGD(0.1, momentum=0.9))
    tf.train.Checkpoint(model=fresh, optimizer=fresh.optimizer).restore(path)
    fresh.fit(x[64:], y[64:], batch_size=8, shuffle=False, verbose=0)
    for a, b in zip(updater.layers, resumed.layers):
        np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy(), err_msg=a.name)
    assert updater.summary() == resumed.summary()
    assert updater.summary()["dst/updates"] == 4


def test_static_sparse_masks_stay_put():
    model = SparseModel(_net())
    updater = StaticSparse(sparsity=0.5, distribution="uniform", seed=1)
    model.add_mask_updater(updater)
    masks = {layer.name: layer.mask.numpy() for layer in updater.layers}
    assert {n: int(m.sum()) for n, m in masks.items()} == {"fc": 60, "out": 18}
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    model.fit(np.ones((16, 10)), np.zeros(16), batch_size=8, verbose=0)
    for layer in updater.layers:
        np.testing.assert_array_equal(layer.mask.numpy(), masks[layer.name])


def test_bad_input_is_one_config_error_naming_the_argument():
    cases = [(dict(update_interval=0), "update_interval"),
             (dict(drop_fraction=1.5), "drop_fraction"),
             (dict(drop_fraction=-0.1), "drop_fraction"),
             (dict(sparsity=1.0), "sparsity"), (dict(distribution="ekr"), "distribution"),
             (dict(distribution="global"), "distribution"),
             (dict(drop_fraction_decay="linear"), "drop_fraction_decay"),
             (dict(end_step=0), "end_step")]
    for kwargs, name in cases:
        with pytest.raises(ConfigError, match=name):
            RigL(**kwargs)
    model = SparseModel(_net(get_rule("topk")))
    with pytest.raises(ConfigError, match="FixedMask"):
        model.add_mask_updater(RigL())
