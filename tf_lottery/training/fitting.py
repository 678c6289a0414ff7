"""One round of `model.fit` that survives a kill: epoch checkpoints with tf.train.CheckpointManager,
restart from the last good one (falling back past a corrupt one), a NaN/inf loss or trainable
variable — or a loss that grows by orders of magnitude (DIVERGENCE_FACTOR) — stopping the round
with one readable error, and the per-epoch history kept on disk across restarts."""
import json
import math
import os
import re
import sys

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_lottery import workdir as workdir_lib
from tf_lottery.errors import TrainingError

HISTORY_FILE = "history.json"
# Divergence without NaN: a training loss (Keras's running mean of the epoch) above this many times
# max(1, the first loss of the fit), e.g. above 2300 for a 10-class cross-entropy starting at
# ln 10 = 2.3, means logits thousands apart: the learning rate is far too high. Healthy runs stay
# far below (a loss rarely exceeds a few times its starting value).
DIVERGENCE_FACTOR = 1e3


class EpochCheckpoint(keras.callbacks.Callback):
    """Save model + optimizer at the end of every finite epoch; append the epoch's logs to
    history.json (the epoch number is the checkpoint number). Stops training (nothing of the
    epoch saved) at a NaN/inf loss or variable, or a loss above DIVERGENCE_FACTOR × max(1, the
    first loss of this fit); `nan_at` then says where and `diverged` how."""

    def __init__(self, manager, history_path):
        super().__init__()
        self.manager = manager
        self.history_path = history_path
        self.nan_at = None
        self.diverged = "NaN/inf"
        self.first_loss = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.nan_at is not None or loss is None:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            self.nan_at = f"epoch {self._epoch + 1}, step {batch + 1}"
        elif self.first_loss is None:
            self.first_loss = loss
        elif loss > DIVERGENCE_FACTOR * max(1.0, self.first_loss):
            self.nan_at = f"epoch {self._epoch + 1}, step {batch + 1}"
            self.diverged = (f"loss {loss:.3g}, over {DIVERGENCE_FACTOR:g} x the first loss "
                             f"{self.first_loss:.3g}")
        if self.nan_at is not None:
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        # The last step's update can break the weights after its own (finite) loss: then the
        # validation loss is the first to tell.
        val_loss = (logs or {}).get("val_loss")
        if self.nan_at is None and val_loss is not None and not math.isfinite(float(val_loss)):
            self.nan_at = f"epoch {epoch + 1}, after its last step (validation loss)"
        # Scores behind a 0/1 mask (edge-popup) can overflow while the loss stays finite.
        broken = self.nan_at is None and _first_non_finite(self.model.trainable_variables)
        if broken:
            self.nan_at = f"epoch {epoch + 1}, in variable {broken}"
        if self.nan_at is not None:
            self.model.stop_training = True
            return
        logs = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
        history = read_history(self.history_path)
        history = [h for h in history if h["epoch"] < epoch] + [{"epoch": epoch, **logs}]
        with workdir_lib.atomic_write(self.history_path) as f:
            json.dump(history, f)
        with workdir_lib.io_errors(self.manager.directory):
            self.manager.save(checkpoint_number=epoch + 1)


def _first_non_finite(variables):
    """The path of the first variable holding a NaN or inf, else None."""
    for variable in variables:
        if not bool(tf.reduce_all(tf.math.is_finite(variable.value))):
            return variable.path
    return None


def read_history(path):
    """The per-epoch logs of a round so far; an unreadable file (torn by something else than
    our atomic writes) is reported in one line and set aside, and the history restarts."""
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            history = json.load(f)
        if isinstance(history, list) and all(isinstance(h, dict) and "epoch" in h
                                             for h in history):
            return history
        problem = "not a list of epoch records"
    except (OSError, ValueError) as e:
        problem = type(e).__name__
    moved = workdir_lib.set_aside(path)
    print(f"warning: {path} is unreadable ({problem}); set aside as {os.path.basename(moved)}, "
          f"the history restarts here", file=sys.stderr, flush=True)
    return []


def _checkpoint_manager(checkpoint, directory):
    """tf.train.CheckpointManager of `directory`; a state file ('checkpoint') it cannot parse
    is set aside (the checkpoints themselves are found by their files, see restore_latest)."""
    try:
        return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=2)
    except Exception as e:  # noqa: BLE001 text_format.ParseError, tf errors, UnicodeDecodeError
        state = os.path.join(directory, "checkpoint")
        if not os.path.exists(state):
            raise
        moved = workdir_lib.set_aside(state)
        print(f"warning: {state} is unreadable ({type(e).__name__}); set aside as "
              f"{os.path.basename(moved)}", file=sys.stderr, flush=True)
        return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=2)


def _checkpoint_paths(manager):
    """The checkpoints of the manager's directory, oldest first: those of its state file, or
    when that lists none, every ckpt-N with an index file."""
    if manager.checkpoints:
        return list(manager.checkpoints)
    found = []
    if os.path.isdir(manager.directory):
        for name in os.listdir(manager.directory):
            match = re.fullmatch(r"ckpt-(\d+)\.index", name)
            if match:
                found.append((int(match.group(1)), os.path.join(manager.directory,
                                                                name[:-len(".index")])))
    return [path for _, path in sorted(found)]


def restore_latest(manager, checkpoint):
    """Restore the newest readable checkpoint; return the number of completed epochs (0 if none).

    A checkpoint that cannot be read (truncated, corrupt) is reported and the previous one used.
    """
    for path in reversed(_checkpoint_paths(manager)):
        try:
            checkpoint.restore(path).expect_partial()
        except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as e:
            logging.warning("checkpoint %s is unreadable (%s); falling back to the previous one",
                            path, type(e).__name__)
            print(f"[tf_lottery] checkpoint {path} is unreadable ({type(e).__name__}); "
                  "falling back to the previous one")
            continue
        return int(path.rsplit("-", 1)[-1])
    return 0


def fit_round(model, dataset, optimizer, loss, epochs, directory, callbacks=(), metrics=("accuracy",),
              jit_compile=True, validate=True, verbose=1, steps_per_epoch=None):
    """Compile and fit `model` for `epochs` epochs, resuming from checkpoints in `directory`.

    Returns the full per-epoch history of the round (including epochs done before a restart).
    Raises TrainingError when the loss becomes NaN/inf; the last good checkpoint is kept.
    """
    os.makedirs(directory, exist_ok=True)
    with model.distribute_strategy.scope():  # metric and optimizer variables mirrored too
        model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics),
                      jit_compile=jit_compile)
        optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = _checkpoint_manager(checkpoint, os.path.join(directory, "checkpoints"))
    start_epoch = restore_latest(manager, checkpoint)
    history_path = os.path.join(directory, HISTORY_FILE)
    if start_epoch < epochs:
        saver = EpochCheckpoint(manager, history_path)
        steps = steps_per_epoch or dataset.steps_per_epoch
        model.fit(dataset.train_batches(start_epoch), epochs=epochs, initial_epoch=start_epoch,
                  steps_per_epoch=steps, validation_data=dataset.test if validate else None,
                  callbacks=[*callbacks, saver], verbose=verbose,
                  shuffle=False)  # the dataset shuffles each epoch itself
        if saver.nan_at is not None:
            last = manager.latest_checkpoint or "none yet in this round"
            raise TrainingError(
                f"training diverged ({saver.diverged}) in {saver.nan_at}; training stopped; last "
                f"good checkpoint: {last} (earlier rounds are intact). Lower the learning rate or "
                f"check the data.")
    return read_history(history_path)
