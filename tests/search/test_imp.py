import json
import math
import os

import keras
import numpy as np
import pytest

from tests.conftest import needs_fashion_mnist
from tests.search.mlp import mlp, small_dataset
from tf_lottery.errors import ConfigError
from tf_lottery.experiment import Experiment
from tf_lottery.export import load_ticket, save_ticket
from tf_lottery.layers import weight_initializer
from tf_lottery.pruning.selection import prune_count
from tf_lottery.search import side_run as side_run_module
from tf_lottery.search import rounds
from tf_lottery.search.imp import IMPSearch, accuracy_table, rounds_to_reach
from tf_lottery.search.rewind import dense_weights, load_dense_weights, rewind_steps
from tf_lottery.training.recipe import TrainingRecipe

# mlp(): fc1 784x16 and output 16x10
FC1, OUTPUT = 784 * 16, 16 * 10
TOTAL = FC1 + OUTPUT
STEPS_PER_EPOCH = 4  # 256 examples, batch 64


def _recipe(**kw):
    options = dict(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0, epochs=1,
                   lr_schedule="constant", jit_compile=False)
    options.update(kw)
    return TrainingRecipe(**options)


def _experiment(workdir, search):
    return Experiment(workdir=str(workdir), search=search, model_fn=mlp, dataset=small_dataset(),
                      verbose=0, tensorboard=False)


def _state(network):
    """{variable path: value} of every variable of the network."""
    return {v.path: np.array(v.numpy()) for v in network.weights}


class Recorder:
    """Wraps a search: the full state at the start of each round (after begin_round), at the end
    of each ticket's training, after k optimizer steps of round 0, and the learning rate at the
    start and end of each ticket's training."""

    def __init__(self, search, step=None):
        self.search, self.step = search, step
        self.starts, self.trained, self.at_step, self.learning_rates = [], [], None, []
        begin, callbacks = search.begin_round, search.round_callbacks

        def begin_round(model, index, experiment):
            begin(model, index, experiment)
            self.network = model.network
            self.starts.append(_state(model.network))

        def round_callbacks(model, index, experiment):
            return [*callbacks(model, index, experiment), keras.callbacks.LambdaCallback(
                on_train_begin=lambda logs: self._learning_rate(model, "begin"),
                on_train_batch_end=lambda batch, logs: self._maybe_at_step(model, index),
                on_train_end=lambda logs: self._end(model))]

        search.begin_round, search.round_callbacks = begin_round, round_callbacks

    def _learning_rate(self, model, when):
        rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        if when == "begin":
            self.learning_rates.append([rate])
        else:
            self.learning_rates[-1].append(rate)

    def _maybe_at_step(self, model, index):
        if index == 0 and int(model.optimizer.iterations.numpy()) == self.step:
            self.at_step = _state(model.network)

    def _end(self, model):
        self._learning_rate(model, "end")
        self.trained.append(_state(model.network))


def _kernel(state, layer):
    return state[f"{layer}/kernel"]


def _mask(state, layer):
    return state[f"{layer}/mask"]


def _assert_same_except_masks(state, reference, masks_of):
    """Every variable equal; kernels only on the weights the mask keeps."""
    for path, value in state.items():
        if path.endswith("/mask"):
            continue
        if path.endswith("/kernel"):
            kept = masks_of[path[:-len("/kernel")] + "/mask"] > 0
            np.testing.assert_array_equal(value[kept], reference[path][kept], err_msg=path)
        else:
            np.testing.assert_array_equal(value, reference[path], err_msg=path)


# -- settings ------------------------------------------------------------------------------------

def test_parse_rewind_point():
    # IMP's times are search/rewind.py's, the same for every search
    assert rewind_steps("2ep", 390) == 780
    assert rewind_steps("500it", 390) == 500
    assert rewind_steps("0.5ep", 4) == 2
    for bad in ("2", "2 epochs", "ep", "-1it", 2, "1.5it"):
        with pytest.raises(ConfigError, match="rewind_to"):
            rewind_steps(bad, 4)
    IMPSearch(prune_fraction=0.2, num_rounds=3, rewind_to="0.5ep")  # as IMP accepted before


def test_rounds_to_reach_counts_like_magnitude_pruning():
    # global p = 0.2 over 100 weights: 100 -> 80 -> 64 -> 51 -> 41; 41 <= 50 after 4 prunings
    assert rounds_to_reach({"a": 60, "b": 40}, 0.5, 0.2, "global") == 5
    # layerwise a at 0.5, b at 0.2: (30 + 32) then (15 + 26) = 41 <= 50 after 2 prunings
    assert rounds_to_reach({"a": 60, "b": 40}, 0.5, 0.2, "layerwise", {"a": 0.5}) == 3
    assert rounds_to_reach({"a": 60}, 0.0, 0.2, "global") == 1
    with pytest.raises(ConfigError, match="not reached"):  # 0.1·3 rounds to 0: nothing pruned
        rounds_to_reach({"a": 3}, 0.5, 0.1, "layerwise")


def test_bad_settings():
    with pytest.raises(ConfigError, match="exactly one"):
        IMPSearch(prune_fraction=0.2)
    with pytest.raises(ConfigError, match="exactly one"):
        IMPSearch(prune_fraction=0.2, num_rounds=3, target_sparsity=0.9)
    with pytest.raises(ConfigError, match="prune_fraction is required"):
        IMPSearch(num_rounds=3)
    with pytest.raises(ConfigError, match="one-shot"):
        IMPSearch(one_shot=True, prune_fraction=0.2, target_sparsity=0.8)
    with pytest.raises(ConfigError, match="layerwise"):
        IMPSearch(prune_fraction=0.2, num_rounds=3, layer_prune_fractions="frankle_carbin")
    with pytest.raises(ConfigError, match="frankle_carbin_fractions"):
        IMPSearch(prune_fraction=0.2, num_rounds=3, scope="layerwise",
                  layer_prune_fractions="frankle_carbin")
    with pytest.raises(ConfigError, match="rewind_to"):
        IMPSearch(prune_fraction=0.2, num_rounds=3, rewind_to="epoch2")
    with pytest.raises(ConfigError, match="control"):
        IMPSearch(prune_fraction=0.2, num_rounds=3, control="shuffle")
    with pytest.raises(ConfigError, match="scope"):
        IMPSearch(prune_fraction=0.2, num_rounds=3, scope="per_layer")


def test_settings_are_kept_normalised():
    one_shot = IMPSearch(one_shot=True, target_sparsity=0.8)
    assert (one_shot.prune_fraction, one_shot.num_rounds, one_shot.planned_rounds) == (0.8, 2, 2)
    target = IMPSearch(prune_fraction=0.5, target_sparsity=0.7, linear_connectivity="rounds")
    assert target.num_rounds is None and target.linear_connectivity == ("rounds",)
    assert target.run_identity()["num_rounds"] == 1  # as python_run.json recorded it before
    assert target.slimming is None and target.model_kwargs == {}


@needs_fashion_mnist
def test_build_sets_rounds_for_a_target_and_checks_settings(tmp_path):
    search = IMPSearch(prune_fraction=0.5, target_sparsity=0.7, recipe=_recipe())
    search.build(_experiment(tmp_path, search))
    assert search.planned_rounds == 3  # remaining 1, 0.5, 0.25 <= 0.3
    assert search.num_rounds is None  # the configuration is left as given
    late = IMPSearch(prune_fraction=0.5, num_rounds=2, rewind_to="1ep", recipe=_recipe())
    with pytest.raises(ConfigError, match="not before the end of round 0"):
        late.build(_experiment(tmp_path, late))
    unknown = IMPSearch(prune_fraction=0.5, num_rounds=2, exclude=("fc9",), recipe=_recipe())
    with pytest.raises(ConfigError, match="fc9"):
        unknown.build(_experiment(tmp_path, unknown))
    excluded = IMPSearch(prune_fraction=0.5, num_rounds=2, scope="layerwise",
                         layer_prune_fractions={"output": 0.1}, exclude=("output",))
    with pytest.raises(ConfigError, match="not pruned"):
        excluded.build(_experiment(tmp_path, excluded))


# -- the rounds ----------------------------------------------------------------------------------

@needs_fashion_mnist
def test_global_imp_rewound_to_init(tmp_path):
    search = IMPSearch(prune_fraction=0.5, num_rounds=3, recipe=_recipe())
    recorder = Recorder(search)
    results = _experiment(tmp_path, search).run()
    expected = [TOTAL, TOTAL - prune_count(0.5, TOTAL)]
    expected.append(expected[1] - prune_count(0.5, expected[1]))
    assert [r["remaining_weights"] for r in results] == expected == [12704, 6352, 3176]
    assert [r["prune_fraction"] for r in results] == [None, 0.5, 0.5]
    theta0 = recorder.starts[0]
    for index in (1, 2):
        start, previous = recorder.starts[index], recorder.starts[index - 1]
        trained = recorder.trained[index - 1]
        # the ticket of round r is the mask it trained with, nested in the mask before it
        saved = rounds.load_round_masks(str(tmp_path), index)
        for layer in ("fc1", "output"):
            np.testing.assert_array_equal(saved[layer], _mask(start, layer))
            assert np.all(_mask(start, layer) <= _mask(previous, layer))
        # removed: the alive weights of smallest trained |θ|, ranked over both layers
        removed, kept = [], []
        for layer in ("fc1", "output"):
            magnitude = np.abs(_kernel(trained, layer))
            alive, now = _mask(previous, layer) > 0, _mask(start, layer) > 0
            removed.append(magnitude[alive & ~now])
            kept.append(magnitude[now])
        assert np.concatenate(removed).max() <= np.concatenate(kept).min()
        # rewound to θ0: kernels on unpruned weights and every bias exactly
        _assert_same_except_masks(start, theta0, start)
    # the exported ticket: the last mask with the weights it trains from, θ0
    experiment = _experiment(tmp_path, search)
    path = save_ticket(search.model, str(tmp_path / "ticket.npz"),
                       weights=search.ticket_weights(experiment))
    ticket = load_ticket(path)
    for layer in ("fc1", "output"):
        np.testing.assert_array_equal(ticket.get_layer(layer).mask.numpy(),
                                      _mask(recorder.starts[2], layer))
        np.testing.assert_array_equal(ticket.get_layer(layer).raw_kernel.numpy(),
                                      _kernel(theta0, layer))
    table = accuracy_table(str(tmp_path))
    assert [row[1] for row in table] == pytest.approx([1.0, 0.5, 0.25], abs=1e-3)
    assert all(row[3] is None for row in table)


@needs_fashion_mnist
def test_weight_rewinding_restores_theta_k_and_its_learning_rate(tmp_path):
    # k = 1 epoch = 4 steps of T = 8; the ticket trains steps 4..8 of the cosine schedule
    recipe = _recipe(epochs=2, lr_schedule="cosine")
    search = IMPSearch(prune_fraction=0.5, num_rounds=2, rewind_to="1ep", recipe=recipe)
    recorder = Recorder(search, step=STEPS_PER_EPOCH)
    experiment = _experiment(tmp_path, search)
    results = experiment.run()
    # θ_k is a rewind point of search/rewind.py (dense weights, .npz), what the ticket stores
    point = load_dense_weights(str(tmp_path / "init" / "rewind_1ep.npz"))
    ticket_weights = search.ticket_weights(experiment)
    assert sorted(ticket_weights) == sorted(point)
    for key, value in point.items():
        np.testing.assert_array_equal(ticket_weights[key], value)
    np.testing.assert_array_equal(point["fc1/kernel"], _kernel(recorder.at_step, "fc1"))
    assert [r["epochs"] for r in results] == [2, 1]
    assert results[1]["rewind_step"] == 4
    _assert_same_except_masks(recorder.starts[1], recorder.at_step, recorder.starts[1])
    assert not np.array_equal(_kernel(recorder.at_step, "fc1"), _kernel(recorder.starts[0], "fc1"))
    # learning rate at the start of round 0 is the peak; round 1 starts at the schedule's step 4
    assert recorder.learning_rates[0][0] == pytest.approx(0.1)
    assert recorder.learning_rates[1][0] == pytest.approx(recipe.learning_rate_at(1.0))
    assert recorder.learning_rates[1][0] == pytest.approx(0.05)


@needs_fashion_mnist
def test_workdir_of_the_older_rewind_format_still_resumes(tmp_path):
    """A workdir written before IMP used search/rewind.py holds θ_k as a Keras weights file of
    the whole network, init/rewind_<k>it.weights.h5: a rerun rewinds to it."""
    recipe = _recipe(epochs=2)
    first = IMPSearch(prune_fraction=0.5, num_rounds=2, rewind_to="1ep", recipe=recipe)
    experiment = _experiment(tmp_path, first)
    model = first.build(experiment)
    model(next(iter(experiment.dataset.test))[0][:1])
    # the older layout: init/ and a complete round 0, θ_k only in the older format (here θ0 + 1,
    # so that the test tells it from anything else)
    rounds.save_init(str(tmp_path), model.network)
    network = model.network
    theta_k = {key: value + 1.0 for key, value in dense_weights(network).items()}
    for layer in ("fc1", "output"):
        network.get_layer(layer).raw_kernel.assign(theta_k[f"{layer}/kernel"])
        network.get_layer(layer).bias.assign(theta_k[f"{layer}/bias"])
    rounds.save_weights(str(tmp_path / "init" / "rewind_4it.weights.h5"), network)
    rounds.save_round(str(tmp_path), 0, network, first.ticket_masks(model),
                      {"search_epochs": 2, "final_learning_rate": 0.1, "test_accuracy": 0.5})
    search = IMPSearch(prune_fraction=0.5, num_rounds=2, rewind_to="1ep", recipe=recipe)
    recorder = Recorder(search)
    results = _experiment(tmp_path, search).run()
    assert len(results) == 2 and not os.path.exists(tmp_path / "init" / "rewind_1ep.npz")
    for layer in ("fc1", "output"):
        mask = _mask(recorder.starts[0], layer) > 0
        assert 0 < mask.sum() < mask.size  # pruned, then rewound to the older file's θ_k
        np.testing.assert_array_equal(_kernel(recorder.starts[0], layer)[mask],
                                      theta_k[f"{layer}/kernel"][mask])
    ticket_weights = search.ticket_weights(_experiment(tmp_path, search))
    np.testing.assert_array_equal(ticket_weights["fc1/kernel"], theta_k["fc1/kernel"])


@needs_fashion_mnist
@pytest.mark.parametrize("rewind_to", ["lr", "finetune"])
def test_learning_rate_rewinding_and_fine_tuning_keep_trained_weights(tmp_path, rewind_to):
    # two epochs of 4 steps: 0.1 in the first, 0.01 in the second
    recipe = _recipe(lr_schedule="step", lr_drop_epochs=(1,), lr_drop_factor=0.1, epochs=2)
    search = IMPSearch(prune_fraction=0.5, num_rounds=2, rewind_to=rewind_to, recipe=recipe)
    recorder = Recorder(search)
    experiment = _experiment(tmp_path, search)
    results = experiment.run()
    assert search.ticket_weights(experiment) == rounds.round_weights_path(str(tmp_path), 0)
    _assert_same_except_masks(recorder.starts[1], recorder.trained[0], recorder.starts[1])
    assert results[0]["final_learning_rate"] == pytest.approx(0.01)
    if rewind_to == "lr":  # the schedule restarts: 0.1, then 0.01 after its one epoch
        assert recorder.learning_rates[1] == pytest.approx([0.1, 0.01])
    else:  # fine-tuning: the final rate of the round before, constant
        assert recorder.learning_rates[1] == pytest.approx([0.01, 0.01])


@needs_fashion_mnist
def test_fine_tuning_under_cosine_continues_at_the_last_rate_applied(tmp_path):
    """Renda et al.'s fine-tuning goes on at the rate the round ended with: under cosine that is
    the rate of the last step, γ(T-1) > 0, not the schedule's value after it (0)."""
    recipe = _recipe(lr_schedule="cosine", epochs=2)
    search = IMPSearch(prune_fraction=0.5, num_rounds=2, rewind_to="finetune", recipe=recipe)
    recorder = Recorder(search)
    results = _experiment(tmp_path, search).run()
    last = 0.05 * (1 + math.cos(math.pi * 7 / 8))  # step 7 of 8
    assert results[0]["final_learning_rate"] == pytest.approx(last, rel=1e-5)
    assert recorder.learning_rates[1] == pytest.approx([last, last], rel=1e-5)
    assert not np.array_equal(_kernel(recorder.trained[1], "fc1"), _kernel(recorder.starts[1], "fc1"))


def _prune_without_training(tmp_path, search, prunings):
    """Build the search's model and run begin_round for rounds 1..prunings on its initial
    weights (rewind_to='lr' keeps them), returning the ticket masks of every round."""
    experiment = _experiment(tmp_path, search)
    model = search.build(experiment)
    masks = [search.ticket_masks(model)]
    for index in range(1, prunings + 1):
        search.begin_round(model, index, experiment)
        masks.append(search.ticket_masks(model))
    return model, masks


@needs_fashion_mnist
def test_layerwise_frankle_carbin_fractions_give_exact_counts(tmp_path):
    search = IMPSearch(num_rounds=3, scope="layerwise", layer_prune_fractions="frankle_carbin",
                       rewind_to="lr", recipe=_recipe())
    _, masks = _prune_without_training(tmp_path, search, 2)
    # fc1 at 20% of its remaining weights, the output layer at half of that (10%)
    fc1, output = [FC1], [OUTPUT]
    for _ in range(2):
        fc1.append(fc1[-1] - prune_count(0.2, fc1[-1]))
        output.append(output[-1] - prune_count(0.1, output[-1]))
    assert fc1 == [12544, 10035, 8028] and output == [160, 144, 130]
    assert [int(m["fc1"].sum()) for m in masks] == fc1
    assert [int(m["output"].sum()) for m in masks] == output
    for before, after in zip(masks, masks[1:]):
        assert all(np.all(after[name] <= before[name]) for name in before)


@needs_fashion_mnist
def test_one_shot_prunes_to_the_target_at_once_and_keeps_excluded_layers(tmp_path):
    search = IMPSearch(one_shot=True, target_sparsity=0.8, exclude=("output",), rewind_to="lr",
                       recipe=_recipe())
    model, masks = _prune_without_training(tmp_path, search, 1)
    assert search.num_rounds == 2
    assert set(masks[1]) == {"fc1"}  # the excluded layer is not part of the ticket
    assert int(masks[1]["fc1"].sum()) == FC1 - prune_count(0.8, FC1) == 2509
    assert np.all(model.network.get_layer("output").mask.numpy() == 1)


# -- controls ------------------------------------------------------------------------------------

class FitRecorder:
    """Replaces side_run.fit_round (the training of controls and LMC copies) to record the state
    and the data a side run starts from."""

    def __init__(self, monkeypatch):
        self.calls, self.datasets = [], []
        original = side_run_module.fit_round

        def fit_round(model, dataset, optimizer, loss, epochs, directory, **kw):
            self.calls.append((directory, epochs, _state(model.network)))
            self.datasets.append(dataset)
            return original(model, dataset, optimizer, loss, epochs, directory, **kw)

        monkeypatch.setattr(side_run_module, "fit_round", fit_round)


@needs_fashion_mnist
def test_reinit_control_same_mask_fresh_weights_and_resumes(tmp_path, monkeypatch):
    fits = FitRecorder(monkeypatch)
    search = IMPSearch(prune_fraction=0.5, num_rounds=2, evaluate_controls=True,
                       recipe=_recipe())
    recorder = Recorder(search)
    experiment = _experiment(tmp_path, search)
    results = experiment.run()
    assert results[0]["control_test_accuracy"] is None
    [(directory, epochs, control)] = fits.calls
    assert directory == os.path.join(str(tmp_path), "round_01", "control")
    assert epochs == results[1]["epochs"]
    # the control: the ticket's mask on a fresh draw of the initialisation with another seed
    seed = search.control_seed(1, experiment)
    assert seed != experiment.seed and results[1]["control_seed"] == seed
    fresh = mlp((28, 28, 1), 10, kernel_initializer=weight_initializer("kaiming_normal", seed=seed))
    ticket = recorder.starts[1]
    for layer in ("fc1", "output"):
        np.testing.assert_array_equal(_mask(control, layer), _mask(ticket, layer))
        np.testing.assert_array_equal(_kernel(control, layer),
                                      fresh.get_layer(layer).raw_kernel.numpy())
        kept = _mask(ticket, layer) > 0
        assert not np.allclose(_kernel(control, layer)[kept], _kernel(ticket, layer)[kept])
    assert results[1]["control_remaining_fraction"] == results[1]["remaining_fraction"]
    assert 0 <= results[1]["control_test_accuracy"] <= 1
    assert os.path.exists(os.path.join(directory, "history.json"))
    # the ticket's trained state, not the control's, is what round 1 saves
    network = mlp((28, 28, 1), 10)
    network.load_weights(rounds.round_weights_path(str(tmp_path), 1))
    for layer in ("fc1", "output"):
        np.testing.assert_array_equal(network.get_layer(layer).raw_kernel.numpy(),
                                      _kernel(recorder.trained[1], layer))
    # a rerun of the unfinished round reads the finished control back and trains nothing again
    os.remove(os.path.join(rounds.round_dir(str(tmp_path), 1), rounds.METRICS_FILE))
    again = IMPSearch(prune_fraction=0.5, num_rounds=2, evaluate_controls=True,
                      recipe=_recipe())
    rerun = _experiment(tmp_path, again).run()
    assert len(fits.calls) == 1 and rerun[1]["control_history"] == results[1]["control_history"]
    assert rerun[1]["control_test_accuracy"] == results[1]["control_test_accuracy"]
    assert rerun[1]["test_accuracy"] == results[1]["test_accuracy"]


@needs_fashion_mnist
def test_random_prune_control_keeps_layer_counts_and_starting_weights(tmp_path, monkeypatch):
    fits = FitRecorder(monkeypatch)
    search = IMPSearch(prune_fraction=0.5, num_rounds=2, evaluate_controls=True,
                       control="random_prune", recipe=_recipe())
    recorder = Recorder(search)
    results = _experiment(tmp_path, search).run()
    (_, _, control), ticket = fits.calls[0], recorder.starts[1]
    for layer in ("fc1", "output"):
        assert _mask(control, layer).sum() == _mask(ticket, layer).sum()
        assert not np.array_equal(_mask(control, layer), _mask(ticket, layer))
        np.testing.assert_array_equal(_kernel(control, layer), _kernel(ticket, layer))
    assert results[1]["control_layer_densities"] == pytest.approx(results[1]["layer_densities"])


# -- linear mode connectivity --------------------------------------------------------------------

@needs_fashion_mnist
def test_linear_connectivity_between_copies_and_between_rounds(tmp_path, monkeypatch):
    fits = FitRecorder(monkeypatch)
    search = IMPSearch(prune_fraction=0.5, num_rounds=2, linear_connectivity=("copies", "rounds"),
                       connectivity_points=5, recipe=_recipe())
    recorder = Recorder(search)
    experiment = _experiment(tmp_path, search)
    results = experiment.run()
    # one copy per round, from the round's own starting weights and mask, on another data order
    assert [call[0] for call in fits.calls] == [
        os.path.join(str(tmp_path), f"round_0{i}", "lmc_copy") for i in range(2)]
    for (_, epochs, start), expected, result in zip(fits.calls, recorder.starts, results):
        assert epochs == result["epochs"]
        for path, value in expected.items():
            np.testing.assert_array_equal(start[path], value, err_msg=path)
    assert all(d.seed != experiment.dataset.seed for d in fits.datasets)
    assert results[0]["lmc_copy_data_seed"] == fits.datasets[0].seed
    first_batch = lambda d: next(iter(d.train_batches()))[1].numpy()  # noqa: E731
    assert not np.array_equal(first_batch(fits.datasets[0]), first_batch(experiment.dataset))
    for result in results:
        lmc = result["lmc"]
        assert lmc["between"] == ["ticket", "copy"]
        np.testing.assert_allclose(lmc["alphas"], np.linspace(0, 1, 5))
        # the ends are the two trained networks: their test errors as Keras evaluates them
        assert lmc["errors"][0] == pytest.approx(1 - result["test_accuracy"], abs=1e-6)
        assert lmc["errors"][-1] == pytest.approx(1 - result["lmc_copy_test_accuracy"], abs=1e-6)
        assert lmc["barrier"] == pytest.approx(
            max(lmc["errors"]) - (lmc["errors"][0] + lmc["errors"][-1]) / 2)
    assert "lmc_rounds" not in results[0]
    between_rounds = results[1]["lmc_rounds"]
    assert between_rounds["between"] == [0, 1]
    assert between_rounds["errors"][0] == pytest.approx(1 - results[0]["test_accuracy"], abs=1e-6)
    assert between_rounds["errors"][-1] == pytest.approx(1 - results[1]["test_accuracy"],
                                                         abs=1e-6)
    # the round saves the ticket's trained state, not the copy's
    network = mlp((28, 28, 1), 10)
    network.load_weights(rounds.round_weights_path(str(tmp_path), 1))
    np.testing.assert_array_equal(network.get_layer("fc1").raw_kernel.numpy(),
                                  _kernel(recorder.trained[1], "fc1"))


def test_linear_connectivity_settings_are_checked():
    with pytest.raises(ConfigError, match="linear_connectivity"):
        IMPSearch(prune_fraction=0.5, num_rounds=2, linear_connectivity=("copy",))
    with pytest.raises(ConfigError, match="connectivity_points"):
        IMPSearch(prune_fraction=0.5, num_rounds=2, linear_connectivity="rounds",
                  connectivity_points=1)


# -- repulsion -----------------------------------------------------------------------------------

@needs_fashion_mnist
def test_repulsion_uses_every_previous_optimum_and_reloads_them(tmp_path):
    search = IMPSearch(prune_fraction=0.5, num_rounds=2, repulsion_strength=2.0,
                       recipe=_recipe())
    results = _experiment(tmp_path, search).run()
    assert "repulsion" not in results[0]["history"][0]
    assert "squared_cosines_to_previous" not in results[0]
    assert results[1]["history"][0]["repulsion"] > 0
    assert len(results[1]["squared_cosines_to_previous"]) == 1
    # a longer run in the same workdir reads the optima of rounds 0 and 1 back from their files
    again = IMPSearch(prune_fraction=0.5, num_rounds=3, repulsion_strength=2.0,
                      recipe=_recipe())
    more = _experiment(tmp_path, again).run()
    assert len(more[2]["squared_cosines_to_previous"]) == 2
    for index in range(2):
        network = mlp((28, 28, 1), 10)
        network.load_weights(rounds.round_weights_path(str(tmp_path), index))
        for layer in ("fc1", "output"):
            np.testing.assert_array_equal(again._run.optima[index][layer],
                                          network.get_layer(layer).raw_kernel.numpy())
    with open(os.path.join(rounds.round_dir(str(tmp_path), 2), "metrics.json")) as f:
        assert json.load(f)["repulsion_strength"] == 2.0
