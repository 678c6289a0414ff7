import glob
import os
import types

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import needs_fashion_mnist
from tests.search.helpers import tiny_data, tiny_net
from tf_lottery import masks as masks_lib
from tf_lottery.errors import ConfigError
from tf_lottery.experiment import Experiment
from tf_lottery.export import save_ticket, to_plain_model
from tf_lottery.layers.ghosts import GhostActivation, GhostSkip, ghost_modules
from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.layers.masked import masked_layers
from tf_lottery.pruning import random_masks, snip_masks
from tf_lottery.search import rounds
from tf_lottery.search.tost import ToSTTraining, first_decay_epoch
from tf_lottery.training.losses import Distillation, distillation_loss
from tf_lottery.training.recipe import TrainingRecipe

INPUT_SHAPE, CLASSES = (28, 28, 1), 10


def _recipe(epochs=4, drops=(2, 3), **kw):
    return TrainingRecipe(epochs=epochs, lr_schedule="step", lr_drop_epochs=drops,
                          learning_rate=0.1, weight_decay=5e-3, **kw)


class _Probe(keras.callbacks.Callback):
    """At every training step: the learning rate the step uses and the ghosts' state."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        activations, skips = ghost_modules(self.model.network)
        self.steps.append({
            "lr": float(optimizer.learning_rate),  # schedule(iterations): this step's rate
            "alpha": [float(s.alpha.numpy()) for s in skips],
            "relu": [bool(a.relu.numpy()) for a in activations],
            "beta": [float(a.beta.numpy()) for a in activations]})


class _Recorded(ToSTTraining):
    """Records the state each round starts training from, and probes every step."""

    def begin_round(self, model, index, experiment):
        super().begin_round(model, index, experiment)
        self.starts = getattr(self, "starts", [])
        self.starts.append({layer.name: (layer.mask.numpy().copy(), layer.raw_kernel.numpy().copy())
                            for layer in masked_layers(self.plain_network)})

    def round_callbacks(self, model, index, experiment):
        self.probe = _Probe()
        return [*super().round_callbacks(model, index, experiment), self.probe]


def _experiment(workdir, search, tensorboard=False, dataset=None):
    return Experiment(workdir=str(workdir), search=search, model_fn=tiny_net,
                      dataset=dataset or tiny_data(), verbose=0, tensorboard=tensorboard)


def test_settings_are_checked_before_any_training(tmp_path):
    assert first_decay_epoch(_recipe(drops=(90, 135), epochs=180)) == 90
    assert ToSTTraining(recipe=_recipe(drops=(3,))).ghost_end_epoch == 3.0
    with pytest.raises(ConfigError, match="mask_source"):
        ToSTTraining(mask_source="imp")
    with pytest.raises(ConfigError, match="'snip'"):
        ToSTTraining(criterion="snipp")
    with pytest.raises(ConfigError, match="prune_fraction"):
        ToSTTraining(prune_fraction=[0.5, 1.5], recipe=_recipe())
    with pytest.raises(ConfigError, match="first learning-rate decay"):
        ToSTTraining(recipe=TrainingRecipe(epochs=4, lr_schedule="cosine"))
    with pytest.raises(ConfigError, match="ghost_end_epoch"):
        ToSTTraining(recipe=_recipe(epochs=4), ghost_end_epoch=4)  # no epoch without ghosts
    with pytest.raises(ConfigError, match="ghost_activation"):
        ToSTTraining(recipe=_recipe(), ghost_activation="gelu")
    with pytest.raises(ConfigError, match="replaces label smoothing"):
        ToSTTraining(recipe=_recipe(label_smoothing=0.1), teacher="dense")
    with pytest.raises(ConfigError, match="does not exist"):
        ToSTTraining(recipe=_recipe(), teacher=str(tmp_path / "teacher.keras"))
    with pytest.raises(ConfigError, match="ticket_path"):
        ToSTTraining(mask_source="ticket", recipe=_recipe())
    with pytest.raises(ConfigError, match="source_workdir"):
        ToSTTraining(mask_source="round", recipe=_recipe())
    # no ghosts: no decay needed
    assert ToSTTraining(recipe=TrainingRecipe(lr_schedule="cosine"), ghost_skips=False,
                        ghost_activation=None).ghost_end_epoch is None


@pytest.fixture(scope="module")
def tost_run(tmp_path_factory):
    """One round of every tweak but KD on a random mask (75% pruned): 4 epochs, LR x0.1 at
    epochs 2 and 3, so the ghosts fade over epochs 0-1 (step by step) and are gone from epoch 2."""
    gin.bind_parameter("layerwise_rescaled_init.iterations", 2)
    workdir = tmp_path_factory.mktemp("tost")
    search = _Recorded(criterion="random", prune_fraction=0.75, ghost_schedule_per_batch=True,
                       recipe=_recipe(label_smoothing=0.1))
    experiment = _experiment(workdir, search, tensorboard=True)
    try:
        results = experiment.run()
    finally:
        gin.clear_config()
    return types.SimpleNamespace(search=search, experiment=experiment, results=results,
                                 workdir=str(workdir))


@needs_fashion_mnist
def test_ghosts_are_gone_exactly_from_the_first_learning_rate_decay(tost_run):
    steps = tost_run.search.probe.steps
    steps_per_epoch = tost_run.experiment.dataset.steps_per_epoch
    assert len(steps) == 4 * steps_per_epoch
    assert steps[0]["alpha"] and steps[0]["relu"]  # both kinds of ghosts were in
    for step, state in enumerate(steps):
        decayed = state["lr"] < 0.1 * (1 - 1e-6)
        assert decayed == (step >= 2 * steps_per_epoch)
        if decayed:  # exactly gone: alpha 0.0, every neuron exactly ReLU
            assert all(alpha == 0.0 for alpha in state["alpha"])
            assert all(state["relu"])
        else:
            assert all(alpha > 0 for alpha in state["alpha"]) and not any(state["relu"])
    # the linear schedules, moved at every step: alpha 1 -> 0 and beta 1 -> 10 over epochs 0..2
    for step, state in enumerate(steps[:2 * steps_per_epoch]):
        epoch = step / steps_per_epoch
        assert state["alpha"] == [pytest.approx(1 - epoch / 2)] * len(state["alpha"])
        assert state["beta"] == [pytest.approx(1 + 9 * epoch / 2)] * len(state["beta"])
    # a ReLU-switched ghost neuron computes ReLU bit for bit
    activation = ghost_modules(tost_run.search.ghost_network)[0][0]
    x = np.random.default_rng(0).normal(size=(64,)).astype(np.float32)
    np.testing.assert_array_equal(activation(x).numpy(), np.maximum(x, 0))


@needs_fashion_mnist
def test_ghost_schedules_are_logged_to_history_and_tensorboard(tost_run):
    history = tost_run.results[0]["history"]
    assert [h["ghost_alpha"] for h in history] == [1.0, 0.5, 0.0, 0.0]
    assert [h["ghost_beta"] for h in history] == [1.0, 5.5, float("inf"), float("inf")]
    tags = set()
    for path in glob.glob(os.path.join(tost_run.workdir, "tensorboard", "round_00", "**",
                                       "events.out.tfevents.*"), recursive=True):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags |= {value.tag for value in event.summary.value}
    assert {"epoch_ghost_alpha", "epoch_ghost_beta"} <= tags


@needs_fashion_mnist
def test_mask_from_a_criterion_is_computed_at_init_and_pruned_weights_stay_zero(tost_run):
    search, workdir = tost_run.search, tost_run.workdir
    # the criterion's mask of θ0, recomputed here on a fresh network holding the run's θ0
    network = tiny_net(INPUT_SHAPE, CLASSES, mask_rule=FixedMask())
    network.load_weights(os.path.join(rounds.init_dir(workdir), rounds.WEIGHTS_FILE))
    expected = random_masks(network, 0.75, seed=tost_run.experiment.seed)
    saved = rounds.load_round_masks(workdir, 0)
    assert saved.keys() == expected.keys()
    for name, mask in expected.items():
        np.testing.assert_array_equal(saved[name], mask)
        np.testing.assert_array_equal(search.starts[0][name][0], mask)
    assert tost_run.results[0]["sparsity"] == pytest.approx(0.75, abs=0.01)
    for layer in masked_layers(search.model.network):
        mask = expected[layer.name]
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        assert np.all(kernel[mask == 0] == 0.0)  # exactly zero after 4 epochs with decay
        assert np.any(kernel[mask == 1] != search.starts[0][layer.name][1][mask == 1])
        np.testing.assert_array_equal(layer.mask.numpy(), mask)


@needs_fashion_mnist
def test_lrsi_scales_the_masked_initialisation(tost_run):
    search, workdir = tost_run.search, tost_run.workdir
    scales = tost_run.results[0]["lrsi_scales"]
    network = tiny_net(INPUT_SHAPE, CLASSES, mask_rule=FixedMask())
    network.load_weights(os.path.join(rounds.init_dir(workdir), rounds.WEIGHTS_FILE))
    assert set(scales) == {"conv", "fc", "output"}
    for layer in masked_layers(network):
        np.testing.assert_allclose(search.starts[0][layer.name][1],
                                   scales[layer.name] * layer.raw_kernel.numpy(), rtol=1e-6)


@needs_fashion_mnist
def test_ghosts_are_removed_and_the_export_is_the_original_architecture(tost_run, tmp_path):
    search, results = tost_run.search, tost_run.results
    network = search.model.network
    assert network is search.plain_network
    assert ghost_modules(network) == ([], [])
    assert results[0]["ghosts_removed"] and results[0]["tweaks"] == {
        "ghost_skips": True, "ghost_activation": "swish", "lrsi": True,
        "label_smoothing": 0.1, "distillation": None}
    fresh = tiny_net(INPUT_SHAPE, CLASSES, mask_rule=FixedMask())
    assert [type(layer) for layer in network.layers] == [type(layer) for layer in fresh.layers]
    # the trained graph (ghosts in, faded) and the original one give the same outputs, bit for bit
    x = next(iter(tost_run.experiment.dataset.test))[0]
    ghosted = search.ghost_network
    assert any(isinstance(layer, (GhostSkip, GhostActivation)) for layer in ghosted.layers)
    np.testing.assert_array_equal(ghosted(x, training=False).numpy(),
                                  network(x, training=False).numpy())
    # the exported model: plain Keras, no ghosts, same outputs
    plain = to_plain_model(search.model)
    assert not any(isinstance(layer, (GhostSkip, GhostActivation)) for layer in plain.layers)
    np.testing.assert_allclose(plain(x, training=False).numpy(),
                               network(x, training=False).numpy(), atol=1e-5)
    paths = tost_run.experiment.export()
    loaded = tf.saved_model.load(paths["saved_model"])
    np.testing.assert_allclose(loaded.serve(x).numpy(), network(x, training=False).numpy(),
                               atol=1e-5)
    # the round's record is the original architecture too
    again = tiny_net(INPUT_SHAPE, CLASSES, mask_rule=FixedMask())
    again.load_weights(rounds.round_weights_path(tost_run.workdir, 0))
    np.testing.assert_array_equal(again(x, training=False).numpy(),
                                  network(x, training=False).numpy())


def _random_ticket(path, seed):
    network = tiny_net(INPUT_SHAPE, CLASSES, mask_rule=FixedMask(),
                       kernel_initializer=keras.initializers.RandomNormal(seed=seed))
    network(np.zeros((1, *INPUT_SHAPE), np.float32))
    rng = np.random.default_rng(seed)
    masks = {layer.name: (rng.random(layer.mask.shape) < 0.3).astype(np.float32)
             for layer in masked_layers(network)}
    masks_lib.set_masks(network, masks)
    save_ticket(network, path)
    return masks, {layer.name: layer.raw_kernel.numpy().copy() for layer in masked_layers(network)}


@needs_fashion_mnist
def test_mask_and_weights_from_ticket_files_one_round_each(tmp_path):
    tickets = [_random_ticket(str(tmp_path / f"ticket{i}.npz"), seed=i) for i in (1, 2)]
    search = _Recorded(mask_source="ticket",
                       ticket_path=[str(tmp_path / "ticket1.npz"), str(tmp_path / "ticket2.npz")],
                       recipe=_recipe(epochs=1, drops=()), lrsi=False, ghost_skips=False,
                       ghost_activation=None)
    results = _experiment(tmp_path / "run", search).run()
    assert len(results) == 2
    for index, (masks, kernels) in enumerate(tickets):
        saved = rounds.load_round_masks(str(tmp_path / "run"), index)
        for name in masks:
            np.testing.assert_array_equal(saved[name], masks[name])
            start_mask, start_kernel = search.starts[index][name]
            np.testing.assert_array_equal(start_mask, masks[name])
            np.testing.assert_array_equal(start_kernel, kernels[name])  # the ticket's weights
        assert results[index]["mask"]["ticket_path"].endswith(f"ticket{index + 1}.npz")
    # without the ticket's weights: this run's own initialisation
    search = _Recorded(mask_source="ticket", ticket_path=str(tmp_path / "ticket1.npz"),
                       ticket_weights=False, recipe=_recipe(epochs=1, drops=(1,)), lrsi=False,
                       ghost_skips=False, ghost_activation=None)
    _experiment(tmp_path / "own", search).run()
    own = tiny_net(INPUT_SHAPE, CLASSES, mask_rule=FixedMask())
    own.load_weights(os.path.join(rounds.init_dir(str(tmp_path / "own")), rounds.WEIGHTS_FILE))
    for layer in masked_layers(own):
        np.testing.assert_array_equal(search.starts[0][layer.name][1], layer.raw_kernel.numpy())
        np.testing.assert_array_equal(search.starts[0][layer.name][0], tickets[0][0][layer.name])


@needs_fashion_mnist
def test_masks_from_rounds_of_an_earlier_run_and_snip_at_init(tmp_path):
    source = str(tmp_path / "source")
    rng = np.random.default_rng(3)
    network = tiny_net(INPUT_SHAPE, CLASSES, mask_rule=FixedMask())
    network(np.zeros((1, *INPUT_SHAPE), np.float32))
    source_masks = []
    for index in range(3):
        masks = {layer.name: (rng.random(layer.mask.shape) < 0.5).astype(np.float32)
                 for layer in masked_layers(network)}
        source_masks.append(masks)
        if index < 2:  # round 2 is incomplete (no metrics.json): not a source
            rounds.save_round(source, index, network, masks, {"test_accuracy": 0.0})
        else:
            os.makedirs(rounds.round_dir(source, index))
            rounds.save_masks(os.path.join(rounds.round_dir(source, index), rounds.MASKS_FILE),
                              masks)
    search = ToSTTraining(mask_source="round", source_workdir=source, source_round=[0, -1],
                          recipe=_recipe(epochs=1, drops=()), lrsi=False, ghost_skips=False,
                          ghost_activation=None)
    results = _experiment(tmp_path / "run", search).run()
    for index, expected in enumerate([source_masks[0], source_masks[1]]):
        saved = rounds.load_round_masks(str(tmp_path / "run"), index)
        for name in expected:
            np.testing.assert_array_equal(saved[name], expected[name])
    assert [r["mask"]["source_round"] for r in results] == [0, 1]
    with pytest.raises(ConfigError, match="no completed round 2"):
        ToSTTraining(mask_source="round", source_workdir=source, source_round=2,
                     recipe=_recipe()).source_round_index(2)

    # SNIP at θ0 on the first training batch of epoch 0
    search = ToSTTraining(criterion="snip", prune_fraction=0.9,
                          recipe=_recipe(epochs=1, drops=(1,)), lrsi=False, ghost_skips=False,
                          ghost_activation=None)
    experiment = _experiment(tmp_path / "snip", search)
    results = experiment.run()
    network = tiny_net(INPUT_SHAPE, CLASSES, mask_rule=FixedMask())
    network.load_weights(os.path.join(rounds.init_dir(str(tmp_path / "snip")), rounds.WEIGHTS_FILE))
    x, y = next(iter(experiment.dataset.train_epoch(0)))
    expected = snip_masks(network, x, y, 0.9)
    saved = rounds.load_round_masks(str(tmp_path / "snip"), 0)
    for name in expected:
        np.testing.assert_array_equal(saved[name], expected[name])
    assert results[0]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert results[0]["tweaks"] == {"ghost_skips": False, "ghost_activation": None,
                                    "lrsi": False, "label_smoothing": 0.0, "distillation": None}


@needs_fashion_mnist
def test_distillation_from_a_dense_teacher_trained_first_or_a_saved_one(tmp_path):
    search = _Recorded(criterion="random", prune_fraction=0.5, teacher="dense",
                       teacher_epochs=1, distillation_temperature=2.0, distillation_alpha=0.7,
                       recipe=_recipe(epochs=1, drops=(1,)), lrsi=False, ghost_skips=False,
                       ghost_activation=None)
    experiment = _experiment(tmp_path / "run", search)
    results = experiment.run()
    teacher_dir = os.path.join(str(tmp_path / "run"), "teacher")
    assert os.path.exists(os.path.join(teacher_dir, rounds.METRICS_FILE))
    assert results[0]["tweaks"]["distillation"] == "dense"
    model, teacher = search.model, search.distillation.teacher
    # the teacher was trained from θ0 and its recorded accuracy is its own
    theta0 = tiny_net(INPUT_SHAPE, CLASSES, mask_rule=FixedMask())
    theta0.load_weights(os.path.join(rounds.init_dir(str(tmp_path / "run")), rounds.WEIGHTS_FILE))
    for trained, initial in zip(masked_layers(teacher), masked_layers(theta0)):
        assert not np.array_equal(trained.raw_kernel.numpy(), initial.raw_kernel.numpy())
    teacher.compile(metrics=["accuracy"], loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    evaluation = teacher.evaluate(experiment.dataset.test, verbose=0, return_dict=True)
    assert results[0]["teacher_test_accuracy"] == pytest.approx(evaluation["accuracy"])
    assert model.distillation is search.distillation
    # the teacher is dense and not part of the student
    assert all(np.all(layer.mask.numpy() == 1) for layer in masked_layers(teacher))
    assert {id(v) for v in model.weights}.isdisjoint({id(v) for v in teacher.weights})
    # the student's training loss is the distillation loss against that teacher
    x, y = next(iter(experiment.dataset.train_epoch(0)))
    expected = float(np.mean(distillation_loss(model(x, training=True), teacher(x), y, 2.0, 0.7)))
    got = float(model.compute_loss(x, y, model(x, training=True), training=True))
    assert got == pytest.approx(expected, rel=1e-5)

    # a saved teacher: loaded from its .keras file
    path = str(tmp_path / "teacher.keras")
    teacher.save(path)
    saved = ToSTTraining(criterion="random", recipe=_recipe(), teacher=path)
    loaded = saved._teacher(experiment)
    np.testing.assert_allclose(loaded(x).numpy(), teacher(x).numpy(), atol=1e-6)
    assert isinstance(saved.distillation, Distillation)


@needs_fashion_mnist
def test_ghosts_need_standalone_relus_and_conv_blocks(tmp_path):
    def fused(input_shape, num_classes, **kw):
        from tf_lottery.models import build_model
        return build_model("conv2", input_shape, num_classes, plan=[4, "pool"],
                           dense_units=[8], **kw)

    search = ToSTTraining(criterion="random", recipe=_recipe(epochs=2, drops=(1,)), lrsi=False)
    experiment = Experiment(workdir=str(tmp_path), search=search, model_fn=fused,
                            dataset=tiny_data(), verbose=0, tensorboard=False)
    with pytest.raises(ConfigError, match="batch_norm = True"):
        experiment.run()


class _Killed(Exception):
    pass


class _KilledAt(ToSTTraining):
    """Stops the run at the start of epoch `kill_epoch` of round 0 (after its checkpoints)."""

    kill_epoch = None

    def round_callbacks(self, model, index, experiment):
        kill_epoch = self.kill_epoch

        class Kill(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == kill_epoch:
                    raise _Killed()

        return [*super().round_callbacks(model, index, experiment), Kill()]


@needs_fashion_mnist
@pytest.mark.slow
def test_a_killed_round_resumes_with_its_ghosts_and_scales(tmp_path):
    gin.bind_parameter("layerwise_rescaled_init.iterations", 2)
    try:
        def search():
            return _KilledAt(criterion="random", prune_fraction=0.5, recipe=_recipe())

        whole = _experiment(tmp_path / "whole", search()).run()
        killed = search()
        killed.kill_epoch = 3  # epochs 0-2 done: the ghosts have just gone
        with pytest.raises(_Killed):
            _experiment(tmp_path / "resumed", killed).run()
        resumed_search = search()
        resumed = _experiment(tmp_path / "resumed", resumed_search).run()
    finally:
        gin.clear_config()
    assert [h["ghost_alpha"] for h in resumed[0]["history"]] == [1.0, 0.5, 0.0, 0.0]
    assert resumed[0]["lrsi_scales"] == whole[0]["lrsi_scales"]
    assert resumed[0]["ghosts_removed"] and ghost_modules(resumed_search.model.network) == ([], [])
    for name, mask in rounds.load_round_masks(str(tmp_path / "whole"), 0).items():
        np.testing.assert_array_equal(rounds.load_round_masks(str(tmp_path / "resumed"), 0)[name],
                                      mask)
    # the same training: the same weights (up to float reassociation)
    networks = []
    for run in ("whole", "resumed"):
        networks.append(tiny_net(INPUT_SHAPE, CLASSES, mask_rule=FixedMask()))
        networks[-1].load_weights(rounds.round_weights_path(str(tmp_path / run), 0))
    for a, b in zip(*(masked_layers(n) for n in networks)):
        np.testing.assert_allclose(a.raw_kernel.numpy(), b.raw_kernel.numpy(), atol=1e-5)
