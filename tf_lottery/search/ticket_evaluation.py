"""Ticket evaluation, the same for every search: a found mask m is judged by training the
sub-network f(x; m ⊙ w) in a fresh run from a rewind point w_k (the initialisation or an early
iterate of round 0) and measuring its test accuracy (Frankle & Carbin 2019; CS paper Sec. 4:
"our evaluation focuses on the generalization performance of each ticket (sub-network) when
trained from scratch (or from an iterate in early-training)").

The fresh run uses FixedMask layers, dense weights from the rewind point (rewind.py), and is a
side run (side_run.py) in its own directory (round_NN/retrain/), so a killed evaluation resumes
from its last epoch checkpoint and a finished one is read back instead of being trained again.
"""
import os

from tf_lottery import masks as masks_lib
from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.search.rewind import assign_dense_weights, load_dense_weights
from tf_lottery.search.side_run import train_side_run
from tf_lottery.training.sparse_model import SparseModel


def ticket_model(experiment, masks, dense_weights, model_kwargs=None):
    """SparseModel of the experiment's architecture with FixedMask layers, the given dense
    weights and masks (masked layers absent from `masks`, e.g. excluded ones, stay dense)."""
    network = experiment.build_network(mask_rule=FixedMask(), **(model_kwargs or {}))
    with experiment.strategy.scope():
        model = SparseModel(network)
    model(next(iter(experiment.dataset.test))[0][:1])
    assign_dense_weights(network, dense_weights)
    masks_lib.set_masks(network, masks)
    return model


def evaluate_ticket(experiment, masks, dense_weights, recipe, model_kwargs=None):
    """Test {'loss', 'accuracy'} of f(x; m ⊙ w) for the given weights, without training."""
    model = ticket_model(experiment, masks, dense_weights, model_kwargs)
    model.compile(loss=recipe.make_loss(), metrics=["accuracy"], jit_compile=False)
    result = model.evaluate(experiment.dataset.test, verbose=0, return_dict=True)
    return {"loss": float(result["loss"]), "accuracy": float(result["accuracy"])}


def retrain_ticket(experiment, masks, rewind_weights_path, directory, recipe, model_kwargs=None):
    """Train ticket `masks` from the rewind point in `rewind_weights_path` with `recipe` in a
    fresh run under `directory`; return its metrics (`retrained_test_accuracy`, ...).

    Resumable: epoch checkpoints in directory/checkpoints; once done, the metrics are written to
    directory/metrics.json and returned from there by later calls.

    Args:
      experiment: the Experiment whose model_fn and dataset build and train the ticket.
      masks: {layer name: 0/1 mask} (masked layers absent stay dense).
      rewind_weights_path: a rewind point (.npz of dense_weights, search/rewind.py).
      directory: the run's folder.
      recipe: the TrainingRecipe it is trained with.
      model_kwargs: extra keyword arguments for the experiment's model_fn.
    """
    dataset = experiment.dataset
    remaining, total = masks_lib.count(masks)

    def summarize(model, history, evaluation):
        last = history[-1] if history else {}
        return {
            "retrained_test_accuracy": float(evaluation["accuracy"]),
            "retrained_test_loss": float(evaluation["loss"]),
            "retrained_train_accuracy": last.get("accuracy"),
            "retrained_epochs": recipe.epochs,
            "retrained_remaining_fraction": remaining / total if total else 1.0,
            "retrained_from": os.path.basename(rewind_weights_path),
            "retrained_history": history,
        }

    return train_side_run(
        lambda: ticket_model(experiment, masks, load_dense_weights(rewind_weights_path),
                             model_kwargs),
        directory, dataset, lambda: recipe.make_optimizer(dataset.steps_per_epoch),
        recipe.make_loss(), recipe.epochs, jit_compile=recipe.jit_compile,
        verbose=experiment.verbose, summarize=summarize)
