"""TensorBoard logs of a tiny real search, read back from the event files."""
import collections
import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import needs_fashion_mnist
from tests.search.helpers import tiny_data
from tf_lottery.experiment import Experiment
from tf_lottery.layers import MaskedConv2D, MaskedDense
from tf_lottery.layers.ghosts import GhostActivation
from tf_lottery.search import rounds
from tf_lottery.search.edge_popup import EdgePopupSearch
from tf_lottery.search.summaries import accuracy_vs_remaining_table, scalar_metrics
from tf_lottery.training.callbacks import ScheduleCallback, bind_ghost_schedules
from tf_lottery.training.recipe import TrainingRecipe
from tf_lottery.training.schedules import GhostBetaSchedule

EPOCHS, CYCLES = 2, 2
BETA = GhostBetaSchedule(relu_epoch=10, initial_beta=1.0, final_beta=6.0)


def ghost_net(input_shape, num_classes, mask_rule=None, kernel_initializer="glorot_uniform",
              score_initializer="kaiming_uniform", affine=True):
    masking = dict(mask_rule=mask_rule, score_initializer=score_initializer,
                   kernel_initializer=kernel_initializer)
    inputs = keras.Input(input_shape)
    x = MaskedConv2D(4, 3, use_bias=False, name="conv", **masking)(inputs)
    x = GhostActivation(name="ghost")(x)
    x = keras.layers.MaxPooling2D(4)(x)
    x = keras.layers.Flatten()(x)
    x = MaskedDense(16, activation="relu", name="fc", **masking)(x)
    outputs = MaskedDense(num_classes, name="output", **masking)(x)
    return keras.Model(inputs, outputs)


class ScheduledEdgePopup(EdgePopupSearch):
    """Edge-popup with a ghost β schedule, as a ToST-style search would add one."""

    def round_callbacks(self, model, index, experiment):
        schedules = ScheduleCallback(bind_ghost_schedules(model.network, BETA))
        return [schedules, *super().round_callbacks(model, index, experiment)]


def read_events(directory):
    """{tag: [(step, value as numpy)]} of every event file under `directory` (not recursive)."""
    found = collections.defaultdict(list)
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found[value.tag].append((event.step, tf.make_ndarray(value.tensor)))
    return found


def steps(events, tag):
    return sorted(step for step, _ in events[tag])


def value_at(events, tag, step):
    (value,) = [v for s, v in events[tag] if s == step]
    return value


def test_scalar_metrics_keeps_finite_numbers_only():
    metrics = {"round": 3, "test_accuracy": 0.5, "steps": 12, "ok": True, "name": "ep",
               "loss": float("nan"), "layer_densities": {"a": 0.5}, "remaining": np.float32(0.25)}
    assert scalar_metrics(metrics) == {"test_accuracy": 0.5, "steps": 12.0, "remaining": 0.25}
    table = accuracy_vs_remaining_table([{"round": 0, "remaining_fraction": 0.5,
                                          "test_accuracy": 0.75}])
    assert table.splitlines()[-1] == "| 0 | 0.5000 | 0.7500 |"


@needs_fashion_mnist
def test_round_and_epoch_summaries_of_a_tiny_run(tmp_path):
    search = ScheduledEdgePopup(variant="soft_lr", cycles=CYCLES, shrinkage=0.5,
                                recipe=TrainingRecipe(epochs=EPOCHS, learning_rate=0.1))
    workdir = str(tmp_path / "run")
    experiment = Experiment(workdir=workdir, search=search, model_fn=ghost_net,
                            dataset=tiny_data(), verbose=0, tensorboard=True)
    results = experiment.run()
    board = os.path.join(workdir, "tensorboard")

    # per round: scalars keyed by round index, histograms of scores and surviving weights
    per_round = read_events(os.path.join(board, "rounds"))
    for tag in ("round/test_accuracy", "round/remaining_fraction", "round/sparsity",
                "round/dying_ratio", "layer_density/fc"):
        assert steps(per_round, tag) == list(range(CYCLES)), tag
    for index, metrics in enumerate(results):
        on_disk = rounds.load_metrics(workdir, index)
        for name in ("test_accuracy", "remaining_fraction"):
            assert value_at(per_round, f"round/{name}", index) == pytest.approx(on_disk[name])
        ticket = rounds.load_round_masks(workdir, index)
        for layer in ("conv", "fc", "output"):
            assert steps(per_round, f"scores/{layer}") == list(range(CYCLES))
            # the histogram holds exactly the weights the ticket keeps: (left, right, count) rows
            histogram = value_at(per_round, f"surviving_weights/{layer}", index)
            assert histogram[:, 2].sum() == pytest.approx(ticket[layer].sum())
            assert histogram[:, 2].sum() < ticket[layer].size
    assert value_at(per_round, "round/remaining_fraction", 1) < value_at(
        per_round, "round/remaining_fraction", 0)
    table = value_at(per_round, "round/accuracy_vs_remaining", CYCLES - 1)
    assert table.item().decode().count("\n") == 1 + CYCLES

    # per epoch: Keras metrics, learning rate, and what callbacks before TensorBoard logged
    for index in range(CYCLES):
        train = read_events(os.path.join(board, f"round_{index:02d}", "train"))
        validation = read_events(os.path.join(board, f"round_{index:02d}", "validation"))
        for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_ghost_beta",
                    "epoch_dying_ratio"):
            assert steps(train, tag) == list(range(EPOCHS)), (index, tag)
        assert steps(validation, "epoch_accuracy") == list(range(EPOCHS))
        for epoch in range(EPOCHS):
            assert value_at(train, "epoch_ghost_beta", epoch) == pytest.approx(BETA(epoch))
        history = json.load(open(os.path.join(rounds.round_dir(workdir, index), "history.json")))
        assert value_at(train, "epoch_dying_ratio", EPOCHS - 1) == pytest.approx(
            history[-1]["dying_ratio"])


@needs_fashion_mnist
def test_no_tensorboard_writes_no_logs(tmp_path):
    search = EdgePopupSearch(variant="ep", cycles=1, shrinkage=0.5,
                             recipe=TrainingRecipe(epochs=1))
    workdir = str(tmp_path / "run")
    Experiment(workdir=workdir, search=search, model_fn=ghost_net, dataset=tiny_data(),
               verbose=0, tensorboard=False).run()
    assert not os.path.exists(os.path.join(workdir, "tensorboard"))
