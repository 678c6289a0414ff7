"""The gin-configured entry of a run: builds data, network and strategy, owns the workdir, and
hands them to a search procedure (tf_lottery/search/), which loops over rounds."""
import os
import sys
import time

import gin
import keras

from tf_lottery.data import load_dataset
from tf_lottery.errors import ConfigError
from tf_lottery.training.strategy import make_strategy


@gin.configurable
class Experiment:
    """A run: `search.run(experiment)` with everything a search needs.

    Args:
      workdir: where rounds, checkpoints, TensorBoard logs and the exported ticket go.
      search: a search procedure object (gin: `Experiment.search = @EdgePopupSearch()`).
      model_fn: builds the network: model_fn(input_shape=..., num_classes=..., mask_rule=...,
        kernel_initializer=..., **search-specific kwargs) (gin: `@build_model`).
      seed: seeds weights, scores, data order and augmentation.
      strategy: a tf.distribute strategy name (see training/strategy.py).
      verbose: Keras progress output (1 = progress bar, 2 = one line per epoch, 0 = silent;
        'auto' = a bar on a terminal, one line per epoch otherwise).
      tensorboard: write TensorBoard logs under workdir/tensorboard.
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
        self.workdir = workdir
        self.search = search
        self.model_fn = model_fn
        self.seed = int(seed)
        self.strategy = make_strategy(strategy)
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
        """The network for this run's data, built under the strategy's scope."""
        info = self.dataset.info
        with self.strategy.scope():
            try:
                return self.model_fn(input_shape=info.input_shape, num_classes=info.num_classes,
                                     **kwargs)
            except TypeError as e:
                raise ConfigError(f"cannot build the model: {e}") from None

    def tensorboard_callbacks(self, round_index):
        if not self.tensorboard:
            return []
        log_dir = os.path.join(self.workdir, "tensorboard", f"round_{round_index:02d}")
        return [keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch")]

    def analysis_callbacks(self, round_index):
        """Fresh analysis callbacks for round `round_index` (their records are the round's)."""
        if not self._analysis_factories:
            return []
        data = [(x, y) for x, y, *_ in self.dataset.test.take(self.analysis_batches)]
        return [factory(data) for factory in self._analysis_factories]

    def export(self):
        """Export the final ticket to workdir/ticket/ (SavedModel + ticket.npz); returns paths."""
        from tf_lottery.export import export_ticket
        from tf_lottery.search import rounds

        done = rounds.completed_rounds(self.workdir)
        final = rounds.load_metrics(self.workdir, done[-1]) if done else {}
        metadata = {k: v for k, v in final.items() if k not in ("history", "layer_densities")}
        return export_ticket(self.search.model.network, os.path.join(self.workdir, "ticket"),
                             metadata=metadata, strong=self.search.strong_ticket, seed=self.seed,
                             weights=self.search.ticket_weights(self))

    def run(self):
        """Run the search; returns the list of round metrics."""
        os.makedirs(self.workdir, exist_ok=True)
        keras.utils.set_random_seed(self.seed)
        start = time.time()
        results = self.search.run(self)
        self.wall_time_s = time.time() - start
        return results
