import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import needs_fashion_mnist
from tests.search.mlp import mlp, small_dataset
from tf_lottery.errors import ConfigError
from tf_lottery.experiment import Experiment
from tf_lottery.pruning import get_criterion, random_masks_like
from tf_lottery.pruning.selection import prune_count
from tf_lottery.search import rounds
from tf_lottery.search.prune_at_init import PruneAtInitSearch
from tf_lottery.training.recipe import TrainingRecipe

FC1, OUTPUT = 784 * 16, 16 * 10


def _experiment(workdir, search):
    return Experiment(workdir=str(workdir), search=search, model_fn=mlp, dataset=small_dataset(),
                      verbose=0, tensorboard=False)


def test_bad_settings():
    with pytest.raises(ConfigError, match="did you mean 'snip'"):
        PruneAtInitSearch(criterion="snipp")
    with pytest.raises(ConfigError, match="num_batches"):
        PruneAtInitSearch(num_batches=0)
    with pytest.raises(ConfigError, match="prune_fraction"):
        PruneAtInitSearch(prune_fraction=1.0)


@needs_fashion_mnist
@pytest.mark.parametrize("criterion", ["random", "magnitude", "snip", "grasp", "synflow"])
def test_mask_is_the_criterion_at_initialisation(tmp_path, criterion):
    search = PruneAtInitSearch(criterion=criterion, prune_fraction=0.9, num_batches=2)
    experiment = _experiment(tmp_path, search)
    model = search.build(experiment)
    network = model.network
    # what the criterion gives on θ0 (seeded by the experiment for random pruning; the first
    # two batches of epoch 0 for SNIP and GraSP)
    x, y = search.scoring_batch(experiment.dataset)
    first_two = list(experiment.dataset.train_epoch(0).take(2))
    assert x.shape[0] == 128
    np.testing.assert_array_equal(x.numpy(), tf.concat([b[0] for b in first_two], 0).numpy())
    function = get_criterion(criterion)
    if criterion in ("snip", "grasp"):
        expected = function(network, x, y, 0.9)
    elif criterion == "random":
        expected = function(network, 0.9, seed=experiment.seed)
    else:
        expected = function(network, 0.9)
    os.makedirs(rounds.init_dir(experiment.workdir))
    search.begin_round(model, 0, experiment)
    ticket = search.ticket_masks(model)
    for name in ("fc1", "output"):
        np.testing.assert_array_equal(ticket[name], expected[name])
    saved = rounds.load_masks(search.masks_path(experiment))
    assert all(np.array_equal(saved[n], ticket[n]) for n in ticket)
    counts = {n: int(m.sum()) for n, m in ticket.items()}
    if criterion in ("random", "magnitude"):  # per layer by default
        assert counts == {"fc1": FC1 - prune_count(0.9, FC1),
                          "output": OUTPUT - prune_count(0.9, OUTPUT)} == {"fc1": 1254,
                                                                           "output": 16}
    else:  # ranked over all layers
        total = FC1 + OUTPUT
        assert sum(counts.values()) == total - prune_count(0.9, total) == 1270


@needs_fashion_mnist
def test_trains_the_stored_mask_and_records_criterion_and_density(tmp_path):
    search = PruneAtInitSearch(criterion="snip", prune_fraction=0.9,
                               recipe=TrainingRecipe(epochs=1, jit_compile=False))
    experiment = _experiment(tmp_path, search)
    # a mask already in workdir/init (a run killed after computing it) is the one trained
    stored = random_masks_like({"fc1": np.ones((784, 16)) * (np.arange(16) < 2),
                                "output": np.ones((16, 10))}, seed=3)
    os.makedirs(rounds.init_dir(str(tmp_path)))
    rounds.save_masks(search.masks_path(experiment), stored)
    [metrics] = experiment.run()
    trained = rounds.load_round_masks(str(tmp_path), 0)
    assert all(np.array_equal(trained[n], stored[n]) for n in stored)
    assert metrics["criterion"] == "snip" and metrics["algorithm"] == "prune_at_init"
    assert metrics["remaining_weights"] == 2 * 784 + 160
    # an MLP applies each kernel entry once: its MACs are the ticket's remaining weights
    assert metrics["macs"] == metrics["remaining_weights"]
    assert metrics["dense_macs"] == metrics["total_weights"]
    assert metrics["density"] == pytest.approx((2 * 784 + 160) / (FC1 + OUTPUT))
    assert metrics["target_density"] == pytest.approx(0.1)
    assert metrics["num_batches"] == 1
    assert search.ticket_weights(experiment) == os.path.join(str(tmp_path), "init",
                                                             rounds.WEIGHTS_FILE)
