"""Keras callbacks that run an analysis every N epochs during model.fit.

After epoch e (0-based, as Keras counts) with (e + 1) % every_n_epochs == 0, each callback
measures the model and writes its values into the epoch's `logs`, so they reach History and
TensorBoard (put these callbacks before keras.callbacks.TensorBoard in the list; History always
runs last), and appends {"epoch": e, **values} to its `records`. On epochs without a measurement
the keys are absent, so History holds one value per measured epoch; `records` says which.
"""
import gin
import keras
import numpy as np

from tf_lottery.analysis._common import labelled_batches
from tf_lottery.analysis.activations import (activation_zero_counts, is_relu,
                                             overall_activation_sparsity)
from tf_lottery.analysis.dying import model_dying_stats
from tf_lottery.analysis.gradient_flow import gradient_flow
from tf_lottery.analysis.hessian import hessian_top_eigenvalue
from tf_lottery.errors import ConfigError


class AnalysisCallback(keras.callbacks.Callback):
    """Base: subclasses implement `measure()` -> {log name: float}."""

    def __init__(self, every_n_epochs=1):
        super().__init__()
        if int(every_n_epochs) != every_n_epochs or every_n_epochs < 1:
            raise ConfigError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}")
        self.every_n_epochs = int(every_n_epochs)
        self.records = []

    def measure(self):
        raise NotImplementedError

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        values = {name: float(value) for name, value in self.measure().items()}
        if logs is not None:
            logs.update(values)
        self.records.append({"epoch": epoch, **values})


def epoch_records(callbacks):
    """The `records` of the AnalysisCallbacks among `callbacks` merged by epoch:
    [{"epoch": e, name: value, ...}] in epoch order (a round's metrics['analysis'])."""
    merged = {}
    for callback in callbacks:
        if isinstance(callback, AnalysisCallback):
            for record in callback.records:
                merged.setdefault(record["epoch"], {}).update(record)
    return [merged[epoch] for epoch in sorted(merged)]


@gin.configurable
class HessianEigenvalueCallback(AnalysisCallback):
    """Top Hessian eigenvalue over the unpruned weights, averaged over the (x, y) batches of
    `data` (ToST Fig. A12 averages 3 batches per epoch); logged as `hessian_top_eigenvalue`.
    Power iteration stops as PyHessian's does by default (100 iterations, relative change 1e-3)."""

    def __init__(self, data, loss_fn=None, every_n_epochs=1, max_iterations=100, tolerance=1e-3,
                 include_biases=False):
        super().__init__(every_n_epochs)
        self.batches = labelled_batches(data)
        self.loss_fn = loss_fn
        self.max_iterations = max_iterations
        self.tolerance = tolerance
        self.include_biases = include_biases

    def measure(self):
        values = [hessian_top_eigenvalue(self.model, x, y, self.loss_fn,
                                         include_biases=self.include_biases,
                                         max_iterations=self.max_iterations,
                                         tolerance=self.tolerance)
                  for x, y in self.batches]
        return {"hessian_top_eigenvalue": np.mean(values)}


@gin.configurable
class ActivationSparsityCallback(AnalysisCallback):
    """Fraction of exact zeros after the ReLUs over `data`: `activation_sparsity` over all of them
    and, with `per_layer`, `activation_sparsity/<layer name>` for each."""

    def __init__(self, data, every_n_epochs=1, per_layer=True, layer_filter=is_relu):
        super().__init__(every_n_epochs)
        self.data = data
        self.per_layer = per_layer
        self.layer_filter = layer_filter

    def measure(self):
        counts = activation_zero_counts(self.model, self.data, self.layer_filter)
        values = {"activation_sparsity": overall_activation_sparsity(counts)}
        if self.per_layer:
            values.update({f"activation_sparsity/{name}": zeros / entries if entries else 0.0
                           for name, (zeros, entries) in counts.items()})
        return values


@gin.configurable
class GradientFlowCallback(AnalysisCallback):
    """Norm of the loss gradient over the unpruned weights, averaged over the (x, y) batches of
    `data`; logged as `gradient_flow`."""

    def __init__(self, data, loss_fn=None, every_n_epochs=1, include_biases=False):
        super().__init__(every_n_epochs)
        self.batches = labelled_batches(data)
        self.loss_fn = loss_fn
        self.include_biases = include_biases

    def measure(self):
        values = [gradient_flow(self.model, x, y, self.loss_fn,
                                include_biases=self.include_biases) for x, y in self.batches]
        return {"gradient_flow": np.mean(values)}


@gin.configurable
class DyingRatioCallback(AnalysisCallback):
    """Dying ratio of the model's TopKScores layers (Eq. 2; equal to hard iEP's worst case) as
    `dying_ratio`, and hard iEP's apparent ratio within the search space as
    `apparent_dying_ratio`."""

    def measure(self):
        stats = model_dying_stats(self.model)
        return {"dying_ratio": stats.dying_ratio,
                "apparent_dying_ratio": stats.apparent_dying_ratio}
