"""`tf_lottery.search.run`: any search on your own Keras model from Python, without gin.

    import tf_lottery as tl
    result = tl.search.run(tl.search.IMPSearch(prune_fraction=0.2, num_rounds=3), my_model,
                           tl.load_dataset("fashion_mnist"), workdir="runs/my_imp")
    result.rounds[-1]["test_accuracy"], result.exported["saved_model"]

It is bin/train's run (an Experiment in a workdir: rounds on disk, resumable, exported ticket)
with the model, data and search given as Python objects.
"""
import dataclasses
import functools
from typing import Optional

import keras

from tf_lottery import workdir as workdir_lib
from tf_lottery.data import Dataset, load_dataset
from tf_lottery.errors import ConfigError
from tf_lottery.experiment import Experiment
from tf_lottery.models.keras_model import KerasModelFn, takes_shape_arguments
from tf_lottery.models.zoo import build_model
from tf_lottery.search.base import RoundSearch


@dataclasses.dataclass
class SearchRun:
    """What `run` returns.

    Args:
      experiment: the Experiment that ran (its workdir, dataset, seed, search).
      rounds: the metrics of every round, in order (rounds[-1] is the final ticket's:
        'test_accuracy', 'remaining_fraction', 'layer_densities', ...).
      exported: {'saved_model': path, 'ticket': path} of the exported ticket, or None.
    """
    experiment: Experiment
    rounds: list
    exported: Optional[dict]

    @property
    def model(self):
        """The search's trained SparseModel (`.network` is the masked Keras network)."""
        return self.experiment.search.model

    @property
    def masks(self):
        """The final ticket: {layer name: 0/1 numpy mask} of the layers the search pruned."""
        return self.experiment.search.ticket_masks(self.model)


def model_fn_of(model):
    """The Experiment model_fn for `model`: a zoo name ('lenet_300_100'), a Keras model, a
    function of no arguments returning one (KerasModelFn), or a model_fn itself (a function
    taking input_shape, num_classes, ... as build_model does)."""
    if isinstance(model, str):
        return functools.partial(build_model, model)
    if callable(model) and not isinstance(model, keras.Model) and takes_shape_arguments(model):
        return model
    return KerasModelFn(model)


def run(search, model, data, workdir, seed=0, export=True, verbose="auto", tensorboard=True,
        strategy="default"):
    """Run `search` on `model` with `data` in `workdir` and export its final ticket.

    The workdir gets what bin/train writes (init/, one round_NN/ per round, TensorBoard logs,
    ticket/): running again with the same workdir continues where the last run stopped
    (completed rounds are read back), so give a new workdir for a new run.

    Args:
      search: a search object, e.g. IMPSearch(...), EdgePopupSearch(...),
        ContinuousSparsificationSearch(...), GradualMagnitudeSearch(...).
      model: your Keras model (functional or Sequential, ending in logits), a function of no
        arguments returning one, a zoo name ('lenet_300_100') or a model_fn (see Experiment).
        It is never changed: the search trains a masked copy (sparsify).
      data: a Dataset (load_dataset(...) or Dataset.from_arrays(...)) or a dataset name.
      workdir: the run's directory.
      seed: seeds the initialisation the search draws (weights, scores) and the training.
      export: write workdir/ticket/saved_model (SavedModel, masks folded into the kernels)
        and workdir/ticket/ticket.npz (the ticket file) at the end.
      verbose: Keras progress output (0 silent, 1 progress bar, 2 a line per epoch, 'auto').
      tensorboard: write TensorBoard logs under workdir/tensorboard.
      strategy: a tf.distribute strategy or its name ('default', 'mirrored', ...).
    Returns:
      a SearchRun: `.rounds` (metrics per round), `.model` (the trained SparseModel),
      `.masks` (the final ticket's masks), `.exported` (paths).
    """
    if not isinstance(search, RoundSearch):
        raise ConfigError(f"search must be a search object such as IMPSearch(...), got "
                          f"{type(search).__name__}")
    if isinstance(data, str):
        data = load_dataset(data, seed=seed)
    if not isinstance(data, Dataset):
        raise ConfigError(f"data must be a Dataset (load_dataset(...) or "
                          f"Dataset.from_arrays(...)) or a dataset name, got "
                          f"{type(data).__name__}")
    experiment = Experiment(workdir=str(workdir), search=search, model_fn=model_fn_of(model),
                            seed=seed, strategy=strategy, verbose=verbose,
                            tensorboard=tensorboard, dataset=data)
    experiment.validate()  # the model fits the data and the search, before anything is written
    lock = workdir_lib.WorkdirLock(experiment.workdir)
    lock.acquire()
    try:
        workdir_lib.mark(experiment.workdir)
        rounds = experiment.run()
        exported = experiment.export() if export and rounds else None
    finally:
        lock.release()
    return SearchRun(experiment=experiment, rounds=rounds, exported=exported)
