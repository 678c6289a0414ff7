"""Controls and linear mode connectivity as evaluators of any search (search/evaluators.py); IMP's
own use of them is tested in test_imp.py."""
import os

import numpy as np
import pytest

from tests.search.helpers import constant_recipe, mlp_experiment
from tests.search.mlp import mlp as seeded_mlp
from tf_lottery.errors import ConfigError
from tf_lottery.experiment import Experiment
from tf_lottery.search import rounds
from tf_lottery.search import side_run as side_run_module
from tf_lottery.search.continuous_sparsification import ContinuousSparsificationSearch
from tf_lottery.search.edge_popup import EdgePopupSearch
from tf_lottery.search.evaluators import Control, LinearModeConnectivity
from tf_lottery.search.gmp import GradualMagnitudeSearch
from tf_lottery.search.rewind import dense_weights, load_rewind_point


class StartRecorder:
    """Records where each side run trains and the state it starts from (side_run.fit_round)."""

    def __init__(self, monkeypatch):
        self.calls = {}
        original = side_run_module.fit_round

        def fit_round(model, dataset, optimizer, loss, epochs, directory, **kw):
            state = {v.path: np.array(v.numpy()) for v in model.network.weights}
            self.calls[os.path.relpath(directory, self.workdir)] = (state, dataset.seed, epochs)
            return original(model, dataset, optimizer, loss, epochs, directory, **kw)

        monkeypatch.setattr(side_run_module, "fit_round", fit_round)


def test_evaluator_settings_are_checked():
    with pytest.raises(ConfigError, match="Control.kind must be one of"):
        Control("shuffle")
    with pytest.raises(ConfigError, match="between"):
        LinearModeConnectivity(between=("copy",))
    with pytest.raises(ConfigError, match="points"):
        LinearModeConnectivity(points=1)
    with pytest.raises(ConfigError, match="listed twice"):
        GradualMagnitudeSearch(recipe=constant_recipe()).evaluators = [Control(), Control()]
    with pytest.raises(ConfigError, match="Evaluator objects"):
        Experiment(workdir="unused", search=None, model_fn=None, evaluators=["control"])


def test_gradual_magnitude_pruning_gets_a_reinit_control_and_instability(tmp_path, monkeypatch):
    fits = StartRecorder(monkeypatch)
    fits.workdir = str(tmp_path)
    search = GradualMagnitudeSearch(final_sparsity=0.75, begin_step=1, end_step=4, frequency=1,
                                    recipe=constant_recipe(), weight_init="kaiming_uniform")
    experiment = mlp_experiment(tmp_path, search, model_fn=seeded_mlp)
    experiment.evaluators = [Control("reinit"),
                             LinearModeConnectivity(["copies"], points=3, bn_batches=1)]
    [metrics] = experiment.run()
    assert sorted(fits.calls) == [os.path.join("round_00", name)
                                  for name in ("control", "lmc_copy", "lmc_ticket")]
    ticket = rounds.load_round_masks(str(tmp_path), 0)
    assert metrics["sparsity"] == pytest.approx(0.75, abs=0.01)
    # the control: the ticket's mask on a fresh draw of GMP's initialisation with another seed,
    # trained as the ticket is (FixedMask, the recipe's epochs)
    control, _, epochs = fits.calls[os.path.join("round_00", "control")]
    seed = search.control_seed(0, experiment)
    assert metrics["control"] == "reinit" and metrics["control_seed"] == seed != experiment.seed
    fresh = dense_weights(search.ticket_network(experiment, seed=seed))
    theta0 = load_rewind_point(search.model, str(tmp_path), "init", 8)
    for layer in ("fc1", "output"):
        np.testing.assert_array_equal(control[f"{layer}/mask"], ticket[layer])
        np.testing.assert_array_equal(control[f"{layer}/kernel"], fresh[f"{layer}/kernel"])
        assert not np.array_equal(fresh[f"{layer}/kernel"], theta0[f"{layer}/kernel"])
    assert epochs == 1 and 0 <= metrics["control_test_accuracy"] <= 1
    assert metrics["control_remaining_fraction"] == pytest.approx(metrics["remaining_fraction"])
    assert os.path.exists(tmp_path / "round_00" / "control" / "metrics.json")
    # instability: the ticket (its mask from θ0) trained twice, on two data orders
    (ticket_start, ticket_seed, _), (copy_start, copy_seed, _) = (
        fits.calls[os.path.join("round_00", name)] for name in ("lmc_ticket", "lmc_copy"))
    assert ticket_seed == experiment.dataset.seed != copy_seed == metrics["lmc_copy_data_seed"]
    for start in (ticket_start, copy_start):
        for layer in ("fc1", "output"):
            np.testing.assert_array_equal(start[f"{layer}/mask"], ticket[layer])
            np.testing.assert_array_equal(start[f"{layer}/kernel"], theta0[f"{layer}/kernel"])
    lmc = metrics["lmc"]
    assert lmc["between"] == ["ticket", "copy"] and len(lmc["errors"]) == 3
    assert lmc["errors"][0] == pytest.approx(1 - metrics["lmc_ticket_test_accuracy"], abs=1e-6)
    assert lmc["errors"][-1] == pytest.approx(1 - metrics["lmc_copy_test_accuracy"], abs=1e-6)
    # the round saved the search's trained network, not a side run's
    assert rounds.load_metrics(str(tmp_path), 0)["control_test_accuracy"] == \
        metrics["control_test_accuracy"]


def test_continuous_sparsification_gets_a_random_prune_control_and_lmc_between_rounds(tmp_path):
    search = ContinuousSparsificationSearch(
        num_rounds=2, recipe=constant_recipe(optimizer="sgd", learning_rate=0.3, momentum=0.9),
        l1_penalty=1e-3, score_init="uniform", initial_score=0.05, rewind_to="init",
        evaluate_tickets=False, evaluation_rewind_to="4it")
    search.evaluators = [Control("random_prune"), LinearModeConnectivity(["rounds"], points=3)]
    results = mlp_experiment(tmp_path, search).run()
    assert (tmp_path / "init" / "rewind_4it.npz").exists()  # the control's starting point
    for result in results:
        assert result["control"] == "random_prune" and 0 <= result["control_test_accuracy"] <= 1
        assert result["control_layer_densities"] == pytest.approx(result["layer_densities"],
                                                                  abs=1e-3)
    assert "lmc_rounds" not in results[0]
    lmc = results[1]["lmc_rounds"]
    assert lmc["between"] == [0, 1]
    # the ends are the binary tickets of rounds 0 and 1 with their trained weights
    assert lmc["errors"][0] == pytest.approx(1 - results[0]["ticket_test_accuracy"], abs=1e-6)
    assert lmc["errors"][-1] == pytest.approx(1 - results[1]["ticket_test_accuracy"], abs=1e-6)


def test_edge_popup_gets_a_reinit_control(tmp_path):
    search = EdgePopupSearch(cycles=1, shrinkage=0.5, recipe=constant_recipe())
    search.evaluators = [Control("reinit")]
    [metrics] = mlp_experiment(tmp_path, search, model_fn=seeded_mlp).run()
    assert metrics["control"] == "reinit" and 0 <= metrics["control_test_accuracy"] <= 1
    assert metrics["control_remaining_fraction"] == pytest.approx(metrics["remaining_fraction"])
