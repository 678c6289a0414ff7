"""Evaluators: measurements of a round's ticket that any search can have, run by RoundSearch after
each round's training and before the round is saved; what they return goes into the round's
metrics.json (and so into bin/report: tf_lottery/analysis/workdir.py, cli/report.py).

List them for any search in gin, `Experiment.evaluators = [@Control(), @LinearModeConnectivity()]`
(with `Control.kind = 'random_prune'`, `LinearModeConnectivity.between = ['copies', 'rounds']`),
or from Python, `tl.search.run(search, model, data, workdir, evaluators=[Control()])`. IMPSearch
builds them from its own arguments (evaluate_controls, control, linear_connectivity,
connectivity_points, connectivity_bn_batches). Two evaluators of the same name (two controls)
are a ConfigError.

How a ticket is trained again beside the round is the search's `ticket_trainer`
(search/side_run.py): on the search's own model as the round trained it, for IMP and pruning
at initialisation (RoundModelTrainer), else on a FixedMask network trained from the ticket's
starting weights (RoundSearch.ticket_start_weights: θ0, CS/ISS's evaluation_rewind_to) with
the search's `ticket_recipe()` (FreshTicketTrainer): CS, ISS, edge-popup (the strong ticket's
mask trained as a weak ticket from its random weights), GMP, DST, ToST. Every training is a
side run in round_NN/<name>/: resumable, read back once finished.

    Control(kind)       Frankle & Carbin 2019's controls: the ticket's training again from
                        another start, in round_NN/control/, recorded as control_test_accuracy
                        (and control_seed, control_test_loss, control_train_accuracy,
                        control_remaining_fraction, control_layer_densities, control_history):
      'reinit'          the same mask, fresh weights: the search's initialisation drawn with
                        the control seed (RoundSearch.control_seed: seed + 7919·round, never
                        the run's own seed);
      'random_prune'    the same starting weights, random masks with each layer's kept count
                        (pruning.random.random_masks_like; Frankle et al. 2020b).
                        A dense ticket (IMP's round 0) has none: control_test_accuracy None.
    LinearModeConnectivity(between, points, bn_batches)
                        test error at `points` evenly spaced points of a straight line between
                        two trained networks and its error barrier (analysis/connectivity.py),
                        BatchNorm statistics recomputed at each point from `bn_batches` training
                        batches:
      'copies'          metrics['lmc'], Frankle et al. 2020's instability: the ticket trained
                        twice from the same start and mask with different SGD noise (another
                        data order and augmentation: the data seed + 104729) in
                        round_NN/lmc_copy/; the other end is the round's own trained network
                        when the round trains the ticket (IMP), else a training on the run's
                        data in round_NN/lmc_ticket/ (lmc_ticket_test_accuracy);
      'rounds'          metrics['lmc_rounds'], Maene Sec. 4.3: the line joins round r-1's and
                        round r's trained tickets (r > 0).
"""
import dataclasses

import gin

from tf_lottery import masks as masks_lib
from tf_lottery.analysis.connectivity import linear_path_metrics
from tf_lottery.errors import ConfigError, check_choice, check_subset
from tf_lottery.pruning.random import random_masks_like
from tf_lottery.search.side_run import evaluation_summary

CONTROLS = ("reinit", "random_prune")
CONNECTIVITY = ("copies", "rounds")
COPY_DATA_SEED_OFFSET = 104729  # the LMC copy's data seed: the dataset's seed + offset


class Evaluator:
    """A measurement RoundSearch runs after every round's training (before the round is saved).

    `name` is unique among a run's evaluators; `evaluate` returns entries of the round's
    metrics.json and leaves the search's model as it found it."""

    name = "evaluator"

    def evaluate(self, search, model, index, experiment, trainer):
        """Entries for round `index`'s metrics; `trainer` (search.ticket_trainer) trains the
        round's ticket again in side runs."""
        raise NotImplementedError

    def describe(self, metrics):
        """A few words for the round's console line, or None."""
        return None


@gin.configurable
class Control(Evaluator):
    """A random control of every round's ticket (module docstring).

    Args:
      kind: 'reinit' (same mask, fresh weights from another seed) or 'random_prune' (same
        starting weights, random masks with the same layer densities).
    """

    name = "control"

    def __init__(self, kind="reinit"):
        self.kind = check_choice("Control.kind", kind, CONTROLS)

    def evaluate(self, search, model, index, experiment, trainer):
        ticket = search.ticket_masks(model)
        remaining, total = masks_lib.count(ticket)
        if remaining == total:  # a dense ticket: nothing to control
            return {"control": self.kind, "control_test_accuracy": None}
        seed = search.control_seed(index, experiment)
        if self.kind == "reinit":
            dense, masks = trainer.fresh_weights(seed), ticket
        else:
            dense, masks = trainer.start_weights(), random_masks_like(ticket, seed=seed)
        remaining, total = masks_lib.count(masks)

        def summarize(model, history, evaluation):
            last = history[-1] if history else {}
            return {"control": self.kind, "control_seed": seed,
                    "control_test_accuracy": float(evaluation["accuracy"]),
                    "control_test_loss": float(evaluation["loss"]),
                    "control_train_accuracy": last.get("accuracy"),
                    "control_remaining_fraction": remaining / total,
                    "control_layer_densities": masks_lib.layer_densities(masks),
                    "control_history": history}

        result, _ = trainer.train("control", dense, masks, summarize)
        return result

    def describe(self, metrics):
        if metrics.get("control_test_accuracy") is None:
            return None
        return f"{metrics['control']} control {metrics['control_test_accuracy']:.4f}"


@gin.configurable
class LinearModeConnectivity(Evaluator):
    """Linear mode connectivity of every round's ticket (module docstring).

    Args:
      between: a subset of ('copies', 'rounds'): which lines to measure.
      points: points on each line, ends included (20 as Maene Sec. 4.3).
      bn_batches: training batches that recompute BatchNorm statistics at each point (models
        without BatchNorm need none).
    """

    name = "linear_mode_connectivity"

    def __init__(self, between=("copies",), points=20, bn_batches=10):
        self.between = check_subset("LinearModeConnectivity.between", between, CONNECTIVITY)
        if not self.between:
            raise ConfigError("LinearModeConnectivity.between is empty: nothing to measure")
        if int(points) < 2 or int(bn_batches) < 1:
            raise ConfigError("LinearModeConnectivity.points must be >= 2 and bn_batches >= 1")
        self.points, self.bn_batches = int(points), int(bn_batches)

    def evaluate(self, search, model, index, experiment, trainer):
        metrics = {}
        if "copies" in self.between:
            dataset = experiment.dataset
            copy_data = dataclasses.replace(dataset, seed=dataset.seed + COPY_DATA_SEED_OFFSET)
            start, ticket = trainer.start_weights(), search.ticket_masks(model)
            if trainer.round_is_ticket:
                trained = trainer.round_weights(index)
            else:
                result, trained = trainer.train("lmc_ticket", start, ticket, evaluation_summary,
                                                keep_weights=True)
                metrics["lmc_ticket_test_accuracy"] = result["test_accuracy"]
            result, copy = trainer.train("lmc_copy", start, ticket, evaluation_summary,
                                         dataset=copy_data, keep_weights=True)
            metrics.update(
                lmc=self._line(trainer, trained, copy, experiment, ["ticket", "copy"]),
                lmc_copy_data_seed=copy_data.seed,
                lmc_copy_test_accuracy=result["test_accuracy"])
        if "rounds" in self.between and index > 0:
            metrics["lmc_rounds"] = self._line(
                trainer, trainer.round_weights(index - 1), trainer.round_weights(index),
                experiment, [index - 1, index])
        return metrics

    def _line(self, trainer, weights_a, weights_b, experiment, between):
        dataset = experiment.dataset
        return linear_path_metrics(
            trainer.network, weights_a, weights_b, dataset.test, self.points,
            bn_reset_data=dataset.train_batches().take(self.bn_batches), between=between)


def check_unique(evaluators):
    """The evaluators as a list; ConfigError if two share a name (say two controls)."""
    evaluators = list(evaluators)
    for evaluator in evaluators:
        if not isinstance(evaluator, Evaluator):
            raise ConfigError(f"evaluators must be Evaluator objects such as Control() or "
                              f"LinearModeConnectivity(), got {evaluator!r}")
    names = [evaluator.name for evaluator in evaluators]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"evaluators listed twice: {twice} (an IMPSearch argument such as "
                          f"evaluate_controls and Experiment.evaluators may both add one)")
    return evaluators
