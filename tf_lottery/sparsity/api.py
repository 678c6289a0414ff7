"""tfmot's pruning calls on tf_lottery's masked layers: port tfmot code by changing the import.

    import tf_lottery.sparsity as sparsity        # was: tfmot.sparsity.keras
    model = sparsity.prune_low_magnitude(
        base, pruning_schedule=sparsity.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000))
    model.compile(...)
    model.fit(x, y, callbacks=[sparsity.UpdatePruningStep()])   # callback optional here
    plain = sparsity.strip_pruning(model)

Differences from tfmot: the returned model is a `SparseModel` around a copy of `base` (a
subclassed `base` itself, changed in place) whose prunable layers are masked (`sparsify`; not
wrapper layers); masks change inside the compiled training step at `optimizer.iterations + 1`
(tfmot's `pruning_step`), so no callback is needed; ties at the threshold keep the earlier
weight (see `magnitude`).
"""
import numbers
import os

import keras
import numpy as np
import tensorflow as tf

from tf_lottery.errors import ConfigError
from tf_lottery.export.plain import network_of, to_plain_model
from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.layers.masked import masked_layers
from tf_lottery.models.sparsify import sparsify
from tf_lottery.sparsity.gmp import GradualMagnitudePruning
from tf_lottery.sparsity.n_m import NMMagnitudePruning
from tf_lottery.sparsity.schedules import ConstantSparsity
from tf_lottery.training.sparse_model import SparseModel


def prune_low_magnitude(model, pruning_schedule=None, distribution="uniform", exclude=(),
                        block_size=(1, 1), block_pooling_type="AVG", sparsity_m_by_n=None):
    """A model that prunes itself by magnitude while it trains with plain `fit`
    (tfmot.sparsity.keras.prune_low_magnitude; gradual pruning, Zhu & Gupta 2017).

    Args:
      model: a built Keras model: a Sequential or functional one (nested ones too) is copied,
        not changed; a subclassed one is masked in place (see `sparsify`). Every layer
        `sparsify` masks is pruned (Dense, Conv*, EinsumDense, Embedding, MultiHeadAttention,
        SeparableConv's two kernels, a PrunableLayer's weights).
      pruning_schedule: a PruningSchedule; default ConstantSparsity(0.5, begin_step=0), as tfmot.
      distribution: per-layer targets: 'uniform' (tfmot's: every layer at the schedule's
        sparsity), 'er', 'erk', 'global' or {layer name: sparsity} (see `distributions`).
      exclude: names of layers to leave dense.
      block_size, block_pooling_type: prune (height, width) blocks of 2-D kernels scored by the
        'AVG' or 'MAX' of |w| (tfmot's block sparsity).
      sparsity_m_by_n: tfmot's (zeros, size): e.g. (2, 4) leaves at most 4 - 2 = 2 non-zeros
        in every 4 consecutive weights along each kernel's input dimension (N:M sparsity with
        N = size - zeros, M = size; see `n_m`). As in tfmot the masks are set once, at step 1,
        and `pruning_schedule` is then not used; needs distribution 'uniform' and no blocks.
    Returns:
      a SparseModel; `model.network` is the masked copy and `model.mask_updaters[0]` the
      GradualMagnitudePruning updater (NMMagnitudePruning with sparsity_m_by_n).
    """
    if sparsity_m_by_n is not None:
        updater = _m_by_n_updater(sparsity_m_by_n, distribution, exclude, block_size)
    else:
        schedule = ConstantSparsity(0.5, begin_step=0) if pruning_schedule is None \
            else pruning_schedule
        updater = GradualMagnitudePruning(schedule, distribution=distribution, exclude=exclude,
                                          block_size=block_size,
                                          block_pooling_type=block_pooling_type)
    network = sparsify(model, rule=FixedMask(), exclude=exclude)
    pruned = SparseModel(network, name=f"pruned_{model.name}")
    pruned.add_mask_updater(updater)
    return pruned


def _m_by_n_updater(sparsity_m_by_n, distribution, exclude, block_size):
    """NMMagnitudePruning for tfmot's sparsity_m_by_n = (zeros, size), pruning at step 1."""
    try:
        zeros, size = sparsity_m_by_n
        ok = all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                 for v in (zeros, size)) and 0 <= zeros < size
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"sparsity_m_by_n must be (zeros, size), integers with "
                          f"0 <= zeros < size (tfmot's m zeros out of n), "
                          f"got {sparsity_m_by_n!r}")
    if distribution != "uniform" or tuple(block_size) != (1, 1):
        raise ConfigError("sparsity_m_by_n takes neither a distribution other than "
                          "'uniform' nor a block_size")
    return NMMagnitudePruning(int(size) - int(zeros), int(size), begin_step=1, exclude=exclude)


def strip_pruning(model):
    """A plain Keras model (no tf_lottery layer) with the masks folded into the kernels (θ ⊙ m)
    and the same outputs (tfmot.sparsity.keras.strip_pruning); see export.to_plain_model."""
    return to_plain_model(model)


class UpdatePruningStep(keras.callbacks.Callback):
    """Accepted for ports of tfmot code and does nothing: the pruning step is the optimizer's
    iteration count, read inside the training step (tfmot needs this callback to set its own
    `pruning_step` variable)."""


def _updaters(model):
    from tf_lottery.sparsity.gmp import GradualMagnitudePruning as _GMP

    return [u for u in getattr(model, "mask_updaters", []) if isinstance(u, _GMP)]


class PruningSummaries(keras.callbacks.TensorBoard):
    """TensorBoard callback that also writes, under log_dir/metrics, each masked layer's sparsity
    (`<layer>/sparsity`, 1 − mean(mask)) and the schedule's target (`sparsity`) at the current
    step, every `update_freq` ('epoch', 'batch' or a number of batches)
    (tfmot.sparsity.keras.PruningSummaries)."""

    def __init__(self, log_dir, update_freq="epoch", **kwargs):
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise ConfigError(f"log_dir must be a non-empty path, got {log_dir!r}")
        super().__init__(log_dir=str(log_dir), update_freq=update_freq, **kwargs)
        self._pruning_writer = None
        self._batches = 0

    def _write_pruning(self):
        if self._pruning_writer is None:
            self._pruning_writer = tf.summary.create_file_writer(
                os.path.join(self.log_dir, "metrics"))
        iterations = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        with self._pruning_writer.as_default():
            for updater in _updaters(self.model):
                target = updater.schedule.sparsity_at(iterations)
                tf.summary.scalar("sparsity", float(target), step=iterations)
            for layer in masked_layers(network_of(self.model)):
                sparsity = 1.0 - float(np.mean(keras.ops.convert_to_numpy(layer.mask)))
                tf.summary.scalar(f"{layer.name}/sparsity", sparsity, step=iterations)
        self._pruning_writer.flush()

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        self._batches += 1
        freq = self.update_freq
        if freq == "batch" or (isinstance(freq, int) and self._batches % freq == 0):
            self._write_pruning()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._write_pruning()

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._pruning_writer is not None:
            self._pruning_writer.close()
            self._pruning_writer = None
