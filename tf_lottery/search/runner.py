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
import json
import os
from typing import Optional

import keras

from tf_lottery import compat
from tf_lottery import workdir as workdir_lib
from tf_lottery.data import Dataset, load_dataset
from tf_lottery.errors import ConfigError
from tf_lottery.experiment import Experiment
from tf_lottery.models.keras_model import KerasModelFn, takes_shape_arguments
from tf_lottery.models.sparsify import copyable
from tf_lottery.models.zoo import build_model
from tf_lottery.search.base import RoundSearch, plain_settings


@dataclasses.dataclass
class SearchRun:
    """What `run` returns.

    Args:
      experiment: the Experiment that ran (its workdir, dataset, seed, search).
      rounds: the metrics of every round, in order (rounds[-1] is the final ticket's:
        'test_accuracy', 'remaining_fraction', 'layer_densities', ...).
      exported: {'saved_model': path, 'ticket': path, 'sizes': {name: {'bytes',
        'gzip_bytes'}}} of the exported ticket (export_ticket), or None.
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


def describe_run(search, model, data, seed):
    """What makes two runs the same run, as JSON text: the search's and its recipe's settings,
    the model's architecture (or the name of the function that builds it), the data and the
    seed. A rerun in the same workdir continues only the same run."""
    if isinstance(model, keras.Model):  # layer configs without names: Keras numbers the
        try:                             # automatic ones ('sequential_3') per process
            architecture = [[type(layer).__name__,
                             {k: v for k, v in layer.get_config().items() if k != "name"}]
                            for layer in compat.sublayers(model)]
        except (TypeError, ValueError, NotImplementedError):
            architecture = type(model).__name__
    else:
        architecture = getattr(model, "__qualname__", None) or repr(model)
    return json.dumps({"search": type(search).__name__, "settings": search.run_identity(),
                       "recipe": plain_settings(search.recipe), "model": architecture,
                       "data": dataclasses.asdict(data.info), "batch_size": data.batch_size,
                       "data_seed": data.seed, "seed": seed}, indent=1, sort_keys=True,
                      default=str)


def _prepare_workdir(workdir, description, overwrite):
    """Refuse a workdir that holds another run (unless `overwrite`: its contents deleted, only
    if tf_lottery wrote them all), then record `description` in it."""
    path = os.path.join(workdir, workdir_lib.PYTHON_RUN_FILE)
    if overwrite:
        workdir_lib.clear(workdir)
    elif workdir_lib.has_progress(workdir):
        previous = None
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                previous = f.read()
        if previous != description:
            what = "another search, model or data" if previous else "a run of bin/train"
            raise ConfigError(f"workdir {workdir} holds {what}: give another workdir, or "
                              f"overwrite=True to delete it and start afresh")
    workdir_lib.mark(workdir)
    with workdir_lib.atomic_write(path) as f:
        f.write(description)


def run(search, model, data, workdir, seed=0, export=True, verbose="auto", tensorboard=True,
        strategy="default", overwrite=False, evaluators=()):
    """Run `search` on `model` with `data` in `workdir` and export its final ticket.

    The workdir gets what bin/train writes (init/, one round_NN/ per round, TensorBoard logs,
    ticket/) and python_run.json (what ran): the same call again continues where the last
    run stopped (completed rounds are read back); another search, model or data in a workdir
    that holds a run is a ConfigError (give another workdir, or overwrite=True).

    Args:
      search: a search object, e.g. IMPSearch(...), EdgePopupSearch(...),
        ContinuousSparsificationSearch(...), GradualMagnitudeSearch(...).
      model: your Keras model (functional or Sequential, ending in logits), a function of no
        arguments returning one (the way to pass a subclassed model, e.g. `MyModel` or
        `lambda: MyModel(...)`: it cannot be copied, so each network is a fresh one masked in
        place), a zoo name ('lenet_300_100') or a model_fn (see Experiment). A model you pass
        is never changed: the search trains a masked copy (sparsify).
      data: a Dataset (load_dataset(...) or Dataset.from_arrays(...)) or a dataset name.
      workdir: the run's directory.
      seed: seeds the initialisation the search draws (weights, scores) and the training.
      export: write workdir/ticket/saved_model (SavedModel, masks folded into the kernels)
        and workdir/ticket/ticket.npz (the ticket file) at the end (Sequential and functional
        models; for a subclassed one pass False and use `.model.save_weights`).
      verbose: Keras progress output (0 silent, 1 progress bar, 2 a line per epoch, 'auto').
      tensorboard: write TensorBoard logs under workdir/tensorboard.
      strategy: a tf.distribute strategy or its name ('default', 'mirrored', ...).
      overwrite: delete what the workdir holds (only a workdir tf_lottery wrote) and start
        afresh.
      evaluators: measurements of every round's ticket (search/evaluators.py), e.g.
        [Control('reinit'), LinearModeConnectivity(['copies'])].
    Returns:
      a SearchRun: `.rounds` (metrics per round), `.model` (the trained SparseModel),
      `.masks` (the final ticket's masks), `.exported` (paths and sizes).
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
                            tensorboard=tensorboard, dataset=data, evaluators=evaluators)
    description = describe_run(search, model, data, seed)  # before the search builds anything
    # the model fits the data and the search, before anything is written
    built = experiment.validate()
    if export and not copyable(getattr(built, "network", built)):
        raise ConfigError("export=True writes a SavedModel of plain Keras layers, which needs a "
                          "Sequential or functional model; for a subclassed model pass "
                          "export=False and save the trained model with save_weights")
    lock = workdir_lib.WorkdirLock(experiment.workdir)
    lock.acquire()
    try:
        _prepare_workdir(experiment.workdir, description, overwrite)
        rounds = experiment.run()
        exported = experiment.export() if export and rounds else None
    finally:
        lock.release()
    return SearchRun(experiment=experiment, rounds=rounds, exported=exported)
