"""Side runs: a model trained beside a search's rounds, in a folder of its own, the same way for
every use: a ticket retrained from its rewind point (ticket_evaluation.retrain_ticket), the
controls and the copies of linear mode connectivity (search/evaluators.py), ToST's dense
teacher (search/tost.py).

    <directory>/
      checkpoints/         fit_round's epoch checkpoints: a killed side run resumes from the last
      history.json         its per-epoch logs
      weights.weights.h5   the trained network
      metrics.json         the result, written last: its presence marks the side run finished

A finished side run is read back (its result, and its trained weights when asked for) instead of
being trained again, so a search resumed after a kill, or a round recomputed after its own
metrics were lost, never trains one twice. A folder of an older version holds the checkpoints
and perhaps metrics.json without weights.weights.h5: the run is then "trained" again by
fit_round, which restores its last checkpoint and trains nothing.
"""
import json
import os

from tf_lottery import masks as masks_lib
from tf_lottery.search import rounds
from tf_lottery.search.rewind import assign_dense_weights, dense_weights, dense_weights_from_file
from tf_lottery.training.fitting import fit_round
from tf_lottery.training.sparse_model import SparseModel

RESULT_FILE = rounds.METRICS_FILE
WEIGHTS_FILE = rounds.WEIGHTS_FILE


def read_side_run(directory, network=None):
    """The result (metrics.json) of the side run finished in `directory`, else None. With a
    `network`, also its trained weights loaded into it; None when they were not kept."""
    result_path = os.path.join(directory, RESULT_FILE)
    weights_path = os.path.join(directory, WEIGHTS_FILE)
    if not os.path.exists(result_path):
        return None
    if network is not None:
        if not os.path.exists(weights_path):
            return None
        network.load_weights(weights_path)
    with open(result_path) as f:
        return json.load(f)


def evaluation_summary(model, history, evaluation):
    """The default result of a side run: test accuracy and loss, the last epoch's training
    accuracy and the history."""
    last = history[-1] if history else {}
    return {"test_accuracy": float(evaluation["accuracy"]),
            "test_loss": float(evaluation["loss"]),
            "train_accuracy": last.get("accuracy"), "history": history}


def train_side_run(model, directory, dataset, make_optimizer, loss, epochs, *, jit_compile=True,
                   verbose=0, summarize=evaluation_summary, keep_weights=False, callbacks=()):
    """Train `model` from its current state in `directory` (see the module docstring); return
    the result, `summarize(model, history, test evaluation)`, which is also written to
    directory/metrics.json.

    Args:
      model: the SparseModel to train, holding the weights and masks to start from (a
        callable returning it: built only when the side run is not finished yet). After the
        call it holds the trained weights, unless the result was read back without them.
      directory: the side run's folder.
      dataset: the Dataset it trains on (and is tested on).
      make_optimizer: () -> a fresh optimizer, called under the model's strategy scope.
      loss, epochs: the loss and the number of epochs.
      jit_compile, verbose: as fit_round.
      summarize: (model, history, evaluation) -> the JSON-serialisable result.
      keep_weights: read back a finished run only with its trained weights (loaded into the
        model); otherwise a finished result is returned without touching the model.
      callbacks: Keras callbacks of the fit.
    """
    if not hasattr(model, "network"):  # a builder: not called for a result read back
        found = None if keep_weights else read_side_run(directory)
        if found is not None:
            return found
        model = model()
    found = read_side_run(directory, model.network if keep_weights else None)
    if found is not None:
        return found
    with model.distribute_strategy.scope():
        optimizer = make_optimizer()
    history = fit_round(model, dataset, optimizer, loss, epochs, directory, callbacks=callbacks,
                        jit_compile=jit_compile, verbose=verbose)
    evaluation = model.evaluate(dataset.test, verbose=0, return_dict=True)
    result = summarize(model, history, evaluation)
    rounds.save_weights(os.path.join(directory, WEIGHTS_FILE), model.network)
    rounds.write_json(os.path.join(directory, RESULT_FILE), result)
    return result


# -- how a search's ticket is trained in side runs -----------------------------------------------

class FreshTicketTrainer:
    """Trains a search's ticket again in side runs of round `index` on a FixedMask network of its
    own (RoundSearch.ticket_network), with the search's `ticket_recipe()` for its epochs: the
    ticket trained from scratch, as ticket evaluation does (Frankle & Carbin 2019; the CS paper,
    Sec. 4), whatever the search's own network is (scores, mask updaters, ghosts). The default
    of RoundSearch.ticket_trainer.

    Weights are {key: array} of dense weights (rewind.dense_weights); masks {layer: 0/1}.
    `round_is_ticket` is False: the round's own training is not the ticket's, so linear mode
    connectivity trains both ends of the line."""

    round_is_ticket = False

    def __init__(self, search, model, index, experiment):
        self.search, self.search_model = search, model
        self.index, self.experiment = index, experiment
        self._model = None

    @property
    def model(self):
        """The SparseModel side runs train (built at first use)."""
        if self._model is None:
            network = self.search.ticket_network(self.experiment)
            with self.experiment.strategy.scope():
                self._model = SparseModel(network)
            self._model(next(iter(self.experiment.dataset.test))[0][:1])
        return self._model

    @property
    def network(self):
        """The network whose get_weights() lists `weights_of`, `round_weights` and `train`
        return (the one linear mode connectivity interpolates)."""
        return self.model.network

    def start_weights(self):
        """The dense weights the ticket trains from (RoundSearch.ticket_start_weights)."""
        return self.search.ticket_start_weights(self.search_model, self.experiment)

    def fresh_weights(self, seed):
        """Dense weights of a fresh draw of the search's initialisation under `seed`."""
        return dense_weights(self.search.ticket_network(self.experiment, seed=seed))

    def weights_of(self, dense, masks):
        """The network's get_weights() with these dense weights and masks."""
        assign_dense_weights(self.network, dense)
        masks_lib.set_masks(self.network, masks)
        return self.network.get_weights()

    def round_weights(self, index):
        """Round `index`'s trained ticket (its trained dense weights, its ticket masks) as a
        weights list of `network`: this round's from the search's model, an earlier one's
        from its files."""
        network = self.search_model.network
        if index == self.index:
            return self.weights_of(dense_weights(network),
                                   self.search.ticket_masks(self.search_model))
        workdir = self.experiment.workdir
        return self.weights_of(
            dense_weights_from_file(network, rounds.round_weights_path(workdir, index)),
            rounds.load_masks(os.path.join(rounds.round_dir(workdir, index), rounds.MASKS_FILE)))

    def train(self, subdir, dense, masks, summarize=evaluation_summary, dataset=None,
              keep_weights=False):
        """Train the ticket (masks) from `dense` in round_NN/<subdir>/ (train_side_run) on
        `dataset` (default: the experiment's); returns (result, the trained weights list when
        keep_weights, else None)."""
        experiment, recipe = self.experiment, self.search.ticket_recipe()
        dataset = dataset or experiment.dataset

        def start():
            model = self.model
            self.weights_of(dense, masks)
            return model

        result = train_side_run(
            start, os.path.join(rounds.round_dir(experiment.workdir, self.index), subdir),
            dataset, lambda: recipe.make_optimizer(dataset.steps_per_epoch), recipe.make_loss(),
            recipe.epochs, jit_compile=recipe.jit_compile, verbose=experiment.verbose,
            summarize=summarize, keep_weights=keep_weights)
        return result, self.network.get_weights() if keep_weights else None


class RoundModelTrainer(FreshTicketTrainer):
    """Trains the ticket again on the search's own model, as round `index` trained it: the
    same optimizer (search.make_optimizer: its learning-rate rewinding or fine-tuning), epochs
    (search.round_epochs), loss and regularisers, starting from the weights and masks the round
    started from (RoundSearch.round_start) with the dense weights and masks given; the model's
    trained state is put back afterwards. For searches whose round trains a fixed mask from the
    weights it starts with (IMP, pruning at initialisation): `round_is_ticket`, so the round's
    own trained network is one end of linear mode connectivity's line."""

    round_is_ticket = True

    @property
    def model(self):
        return self.search_model

    def start_weights(self):
        network = self.network
        current = network.get_weights()
        try:
            network.set_weights(self.search.round_start)
            return dense_weights(network)
        finally:
            network.set_weights(current)

    def round_weights(self, index):
        if index == self.index:
            return self.network.get_weights()
        return rounds.round_weights_path(self.experiment.workdir, index)  # read when used

    def train(self, subdir, dense, masks, summarize=evaluation_summary, dataset=None,
              keep_weights=False):
        search, experiment, index = self.search, self.experiment, self.index
        dataset = dataset or experiment.dataset
        network = self.network
        trained = network.get_weights()
        try:
            network.set_weights(search.round_start)
            assign_dense_weights(network, dense)
            masks_lib.set_masks(network, masks)
            result = train_side_run(
                self.model, os.path.join(rounds.round_dir(experiment.workdir, index), subdir),
                dataset, lambda: search.make_optimizer(index, experiment),
                search.recipe.make_loss(), search.round_epochs(index),
                jit_compile=search.recipe.jit_compile, verbose=experiment.verbose,
                summarize=summarize, keep_weights=keep_weights)
            return result, network.get_weights() if keep_weights else None
        finally:
            network.set_weights(trained)
