"""The gin-configured entry of a run: builds data, network and strategy, owns the workdir, and
hands them to a search procedure (tf_lottery/search/), which loops over rounds.

Under a multi-worker strategy every worker runs the same search, but only the chief writes the
workdir: the others work in a private temporary copy (the pattern Keras uses for checkpoints of
non-chief workers), seeded from the chief's workdir when they can see it, so that a rerun
resumes the same round and epoch on every worker; the copy is deleted when the process ends.
"""
import atexit
import collections
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time

import gin
import keras

from tf_lottery.data import load_dataset
from tf_lottery.errors import ConfigError, TfLotteryError
from tf_lottery.training.strategy import is_chief, make_strategy, sync_workers


@gin.configurable
class Experiment:
    """A run: `search.run(experiment)` with everything a search needs.

    Args:
      workdir: where rounds, checkpoints, TensorBoard logs and the exported ticket go.
      search: a search procedure object (gin: `Experiment.search = @EdgePopupSearch()`).
      model_fn: builds the network (gin: `@build_model`; from Python, tf_lottery.search.run
        makes one of your Keras model: models.KerasModelFn). It is called with keyword
        arguments only, and must accept every one a search may pass:
          input_shape, num_classes   from the dataset's info (always);
          mask_rule                  the rule of every masked layer (always);
          kernel_initializer         the masked kernels' initialisation (IMP, GMP, pruning at
                                     initialisation, ToST, edge-popup; absent: keep your own);
          score_initializer          the scores' initialisation (edge-popup, CS, ISS);
          affine                     edge-popup's affine_batchnorm: trainable batch-norm γ/β;
          **model_kwargs             whatever the search's `model_kwargs` holds.
        A function that takes fewer arguments should take **kwargs; an argument it does not
        take is a ConfigError naming it.
      seed: seeds weights, scores and the training; also the data's order and augmentation
        when `dataset` is None (a Dataset given keeps its own seed).
      strategy: a tf.distribute strategy name (see training/strategy.py) or a strategy.
      verbose: Keras progress output (1 = progress bar, 2 = one line per epoch, 0 = silent;
        'auto' = a bar on a terminal, one line per epoch otherwise).
      tensorboard: write TensorBoard logs under workdir/tensorboard.
      dataset: the Dataset to train and test on (load_dataset(...) or Dataset.from_arrays(...));
        None: load_dataset(seed=seed) as gin configures it.
      analysis_callbacks: measurements during every round's training: factories called as
        `factory(data)` with the first `analysis_batches` (x, y) test batches, each returning an
        AnalysisCallback (gin: `Experiment.analysis_callbacks = [@ActivationSparsityCallback]`);
        their records land in the round's metrics.json under 'analysis' (a round resumed from
        a mid-round checkpoint keeps only the records after the restart; history.json keeps all).
      analysis_batches: how many test batches that data holds.
    """

    def __init__(self, workdir, search=gin.REQUIRED, model_fn=gin.REQUIRED, seed=0,
                 strategy="default", verbose="auto", tensorboard=True, dataset=None,
                 analysis_callbacks=(), analysis_batches=1):
        self.search = search
        self.model_fn = model_fn
        self.seed = int(seed)
        self.strategy = make_strategy(strategy)
        self.is_chief = is_chief(self.strategy)
        self.chief_workdir = workdir
        self.workdir = workdir if self.is_chief else _private_workdir()
        self.verbose = (1 if sys.stdout.isatty() else 2) if verbose == "auto" else int(verbose)
        self.tensorboard = tensorboard
        self._dataset = dataset
        self._analysis_factories = list(analysis_callbacks)
        self.analysis_batches = int(analysis_batches)

    @property
    def dataset(self):
        if self._dataset is None:
            self._dataset = load_dataset(seed=self.seed)
        return self._dataset

    def build_network(self, **kwargs):
        """The network for this run's data, built under the strategy's scope, with the same
        automatic names every time (fresh_automatic_names): masks and rewind points are keyed by
        layer names, so the network a search trains and the one that evaluates its ticket must
        name their layers alike even when model_fn leaves the naming to Keras."""
        info = self.dataset.info
        with self.strategy.scope(), fresh_automatic_names():
            try:
                return self.model_fn(input_shape=info.input_shape, num_classes=info.num_classes,
                                     **kwargs)
            except TypeError as e:
                raise ConfigError(f"cannot build the model: {e}") from None

    def tensorboard_callbacks(self, round_index):
        """Per-epoch TensorBoard logs of a round (put after callbacks that add to the logs)."""
        if not self.tensorboard:
            return []
        log_dir = os.path.join(self.workdir, "tensorboard", f"round_{round_index:02d}")
        return [keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch")]

    def write_round_summary(self, network, ticket, results):
        """Per-round TensorBoard summaries (workdir/tensorboard/rounds) of the last of
        `results`, the metrics of every round so far."""
        if self.tensorboard:
            from tf_lottery.search import summaries

            summaries.write_round_summary(
                os.path.join(self.workdir, "tensorboard", summaries.ROUNDS_DIR), network,
                ticket, results)

    def analysis_callbacks(self, round_index):
        """Fresh analysis callbacks for round `round_index` (their records are the round's)."""
        if not self._analysis_factories:
            return []
        data = [(x, y) for x, y, *_ in self.dataset.test.take(self.analysis_batches)]
        return [factory(data) for factory in self._analysis_factories]

    def export(self):
        """Export the final ticket to workdir/ticket/ (SavedModel + ticket.npz + export_sizes.json);
        returns export_ticket's paths and sizes."""
        from tf_lottery.export import export_ticket
        from tf_lottery.search import rounds

        done = rounds.completed_rounds(self.workdir)
        final = rounds.load_metrics(self.workdir, done[-1]) if done else {}
        metadata = {k: v for k, v in final.items() if k not in ("history", "layer_densities")}
        return export_ticket(self.search.model.network, os.path.join(self.workdir, "ticket"),
                             metadata=metadata, strong=self.search.strong_ticket, seed=self.seed,
                             weights=self.search.ticket_weights(self))

    def validate(self):
        """Check, writing nothing, what only building can check: the data (an unknown or absent
        dataset) and the network with the search's options (an unknown model, layer names);
        bin/train calls it before it touches the workdir. Returns the model built (the
        search's SparseModel), which nothing else uses."""
        try:
            self.dataset  # noqa: B018 (loads it)
            return self.search.build(self)
        except TfLotteryError:
            raise
        except (TypeError, ValueError, KeyError) as e:
            from tf_lottery.config import explain_construction_error

            raise ConfigError(explain_construction_error(e)) from None

    def run(self):
        """Run the search; returns the list of round metrics."""
        sync_workers(self.strategy)  # the chief has prepared its workdir before others copy it
        if not self.is_chief:
            _copy_resume_state(self.chief_workdir, self.workdir)
        os.makedirs(self.workdir, exist_ok=True)
        if self.is_chief:  # damaged rounds are set aside and recomputed, never trusted
            from tf_lottery.search import rounds

            rounds.set_aside_damaged(self.workdir,
                                     report=lambda line: print(f"warning: {line}",
                                                               file=sys.stderr, flush=True))
        keras.utils.set_random_seed(self.seed)
        start = time.time()
        results = self.search.run(self)
        self.wall_time_s = time.time() - start
        return results


def _private_workdir():
    path = tempfile.mkdtemp(prefix="tf_lottery_worker_")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


_RESUME_STATE = re.compile(r"^(init|round_\d+)$")


def _copy_resume_state(source, destination):
    """Copy init/ and round_NN/ of the chief's workdir (when this worker can see it), without
    files being written (*.tmp*): the state a rerun resumes from."""
    if not os.path.isdir(source):
        return
    skip_temporary = shutil.ignore_patterns("*.tmp*")
    for name in os.listdir(source):
        if _RESUME_STATE.match(name) and os.path.isdir(os.path.join(source, name)):
            shutil.copytree(os.path.join(source, name), os.path.join(destination, name),
                            ignore=skip_temporary, dirs_exist_ok=True)


@contextlib.contextmanager
def fresh_automatic_names():
    """Keras names unnamed layers and models from one counter per process ('dense', 'dense_1',
    ...; 'sequential', 'sequential_1', ...), so building the same model_fn twice gives two
    networks whose layers are named differently. Inside this context the counter starts afresh,
    as in a new process: every build names its layers the same way. On leaving, the process's
    counter continues past every name used inside, so later automatic names stay unique."""
    from keras.src.backend.common import global_state

    key = "object_name_uids"
    outer = global_state.get_global_attribute(key) or collections.defaultdict(int)
    inner = collections.defaultdict(int)
    global_state.set_global_attribute(key, inner)
    try:
        yield
    finally:
        for name, used in inner.items():
            outer[name] = max(outer.get(name, 0), used)
        global_state.set_global_attribute(key, outer)
