"""tf_lottery.search.run on a user's own Keras model, Dataset.from_arrays and the public helpers
(reset_masks, freeze_weights, dense_weights / assign_dense_weights)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_lottery as tl
from tf_lottery.layers.initializers import kaiming_std


def _data(batch_size=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(320, 6, 6, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int64")
    return tl.Dataset.from_arrays((x[:256], y[:256]), (x[256:], y[256:]), batch_size=batch_size)


def _model(last_activation=None):
    return keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, name="conv"),
                             keras.layers.Flatten(), keras.layers.Dense(8, name="fc"),
                             keras.layers.Dense(2, activation=last_activation, name="out")])


RECIPE = dict(epochs=1, learning_rate=0.05)


def test_imp_on_a_keras_model_prunes_rewinds_exports_and_leaves_the_model_alone(tmp_path):
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    search = tl.search.IMPSearch(prune_fraction=0.5, num_rounds=2,
                                 recipe=tl.TrainingRecipe(**RECIPE))
    result = tl.search.run(search, model, _data(), tmp_path / "imp", verbose=0)
    assert [round(m["remaining_fraction"], 3) for m in result.rounds] == [1.0, 0.5]
    assert tl.masks.density(result.masks) == pytest.approx(0.5, abs=0.01)
    for old, new in zip(before, model.get_weights()):  # the user's model is never trained
        np.testing.assert_array_equal(old, new)
    x = _data().test.take(1).get_single_element()[0]
    served = tf.saved_model.load(result.exported["saved_model"])  # keep it: it owns variables
    np.testing.assert_allclose(served.serve(x), result.model.network(x), atol=1e-5)


def test_edge_popup_gets_a_signed_constant_init_trains_only_scores_and_exports_a_strong_ticket(
        tmp_path):
    search = tl.search.EdgePopupSearch(cycles=1, target_remaining=0.5,
                                       recipe=tl.TrainingRecipe(**RECIPE))
    result = tl.search.run(search, _model, _data(), tmp_path / "ep", seed=3, verbose=0)
    network = result.model.network
    conv = network.get_layer("conv")
    kernel = conv.raw_kernel.numpy()
    np.testing.assert_allclose(np.abs(kernel), kaiming_std(kernel.shape), rtol=1e-6)
    assert {v.name for v in network.trainable_weights} == {"scores"}
    scores = {layer.name: layer.scores.numpy() for layer in tl.layers.masked.masked_layers(network)}
    assert not np.array_equal(scores["fc"][:2, :2], scores["out"][:2, :2])
    ticket = tl.export.load_ticket(result.exported["ticket"])
    assert tl.export.read_ticket_header(result.exported["ticket"])["kind"] == "strong"
    x = _data().test.take(1).get_single_element()[0]
    np.testing.assert_allclose(ticket(x), network(x), atol=1e-5)


def test_a_softmax_output_or_model_options_are_one_config_error(tmp_path):
    search = tl.search.IMPSearch(prune_fraction=0.5, num_rounds=1)
    with pytest.raises(tl.ConfigError, match="softmax.*from_logits"):
        tl.search.run(search, _model("softmax"), _data(), tmp_path / "a", verbose=0)
    search = tl.search.IMPSearch(prune_fraction=0.5, num_rounds=1, model_kwargs={"width": 2})
    with pytest.raises(tl.ConfigError, match="no model options"):
        tl.search.run(search, _model(), _data(), tmp_path / "b", verbose=0)
    wrong = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    with pytest.raises(tl.ConfigError, match="inputs of shape"):
        tl.search.run(search.__class__(prune_fraction=0.5, num_rounds=1), wrong, _data(),
                      tmp_path / "c", verbose=0)
    assert not (tmp_path / "a").exists()  # checked before anything is written


def test_a_workdir_continues_only_the_same_run(tmp_path):
    workdir = tmp_path / "run"

    def imp(prune_fraction):
        return tl.search.IMPSearch(prune_fraction=prune_fraction, num_rounds=1,
                                   recipe=tl.TrainingRecipe(**RECIPE))

    first = tl.search.run(imp(0.5), _model(), _data(), workdir, verbose=0, export=False)
    weights = workdir / "round_00" / "weights.weights.h5"
    written = weights.stat().st_mtime_ns
    again = tl.search.run(imp(0.5), _model(), _data(), workdir, verbose=0, export=False)
    assert again.rounds[0]["test_accuracy"] == first.rounds[0]["test_accuracy"]
    assert weights.stat().st_mtime_ns == written  # read back, not retrained
    with pytest.raises(tl.ConfigError, match="holds another search, model or data"):
        tl.search.run(imp(0.3), _model(), _data(), workdir, verbose=0, export=False)
    fresh = tl.search.run(imp(0.3), _model(), _data(), workdir, verbose=0, export=False,
                          overwrite=True)
    assert fresh.rounds[0]["round"] == 0


def test_from_arrays_keeps_values_and_takes_tf_data():
    x = np.arange(40, dtype="float32").reshape(10, 4) / 7
    y = np.arange(10) % 3
    data = tl.Dataset.from_arrays((x, y), tf.data.Dataset.from_tensor_slices((x, y)),
                                  batch_size=5)
    assert data.info.num_classes == 3 and data.info.input_shape == (4,)
    assert data.steps_per_epoch == 2
    test_x = np.concatenate([b[0] for b in data.test.as_numpy_iterator()])
    np.testing.assert_allclose(test_x, x, rtol=1e-6)  # used as given: no /255, no normalising
    epoch = np.concatenate([b[0] for b in data.train_epoch(0).as_numpy_iterator()])
    np.testing.assert_allclose(np.sort(epoch.ravel()), np.sort(x.ravel()), rtol=1e-6)
    with pytest.raises(tl.ConfigError, match="labels must be integers 0 .. 1"):
        tl.Dataset.from_arrays((x, y), (x, y), num_classes=2)
    with pytest.raises(tl.ConfigError, match="10 examples but 9 labels"):
        tl.Dataset.from_arrays((x, y[:9]), (x, y))


def test_rewind_reset_and_freeze_helpers_leave_what_they_should():
    network = tl.sparsify(_model(), rule=tl.FixedMask())
    w0 = tl.dense_weights(network)
    masks = {name: (np.random.default_rng(1).random(m.shape) > 0.5).astype("float32")
             for name, m in tl.get_masks(network).items()}
    tl.set_masks(network, masks)
    for variable in network.trainable_weights:
        variable.assign(variable + 1.0)
    tl.assign_dense_weights(network, w0)  # rewinds the weights, keeps the masks
    for name, mask in tl.get_masks(network).items():
        np.testing.assert_array_equal(mask, masks[name])
    for key, value in tl.dense_weights(network).items():
        np.testing.assert_array_equal(value, w0[key])
    tl.reset_masks(network)
    assert all(np.all(m == 1) for m in tl.get_masks(network).values())

    scored = tl.sparsify(_model(), rule=tl.TopKScores(0.5))
    tl.freeze_weights(scored)
    assert {v.name for v in scored.trainable_weights} == {"scores"}


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3, name="conv")
        self.flat = keras.layers.Flatten()
        self.out = keras.layers.Dense(2, name="out")

    def call(self, x):
        return self.out(self.flat(self.conv(x)))


def test_a_subclassed_model_runs_from_a_builder_and_is_refused_where_it_cannot_work(tmp_path):
    search = tl.search.IMPSearch(prune_fraction=0.5, num_rounds=2,
                                 recipe=tl.TrainingRecipe(**RECIPE))
    instance = _Subclassed()
    instance(tf.zeros((1, 6, 6, 1)))
    with pytest.raises(tl.errors.ConfigError, match="pass a function that builds it"):
        tl.search.run(search, instance, _data(), tmp_path / "instance", export=False)
    # a SavedModel needs a model strip_pruning can rebuild: refused before anything is written
    with pytest.raises(tl.errors.ConfigError, match="export=False"):
        tl.search.run(search, _Subclassed, _data(), tmp_path / "export", verbose=0)
    assert not (tmp_path / "export").exists() or not any((tmp_path / "export").iterdir())
    result = tl.search.run(search, _Subclassed, _data(), tmp_path / "run", export=False,
                           verbose=0, tensorboard=False)
    assert [round(m["remaining_fraction"], 3) for m in result.rounds] == [1.0, 0.5]
    assert set(result.masks) == {"conv", "out"}
