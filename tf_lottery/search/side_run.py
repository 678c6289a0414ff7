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

from tf_lottery.search import rounds
from tf_lottery.training.fitting import fit_round

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
