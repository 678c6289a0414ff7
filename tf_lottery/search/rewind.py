"""Rewind points: the weights a ticket (re)starts from, named with their unit (DESIGN.md). One
module for every search: IMP's weight rewinding, CS/ISS's rewinding and ticket evaluation, the
controls' starting weights (search/evaluators.py), the time strings of DST's end_updates.

    'init'    w_0, the initialisation (Frankle & Carbin 2019)
    '2ep'     w_k after 2 epochs of round 0 (Frankle et al. 2019; the CS paper's ResNet tickets
              start from "the iterates from the end of epoch 2", Sec. 4.2); fractional epochs
              ('0.5ep') round to the nearest optimizer step
    '500it'   w_k after 500 optimizer steps of round 0 (a whole number of steps)

A rewind point holds *dense* weights only: kernels, biases, batch-norm parameters and
statistics, never masks, scores or mask-rule state, keyed by layer names from the network down
(export.ticket_file.ticket_variables: 'fc1/kernel'), never by variable path, which carries the
network's own name when the network is a Sequential ('sequential_3/fc1/kernel': an automatic
name that the next build of the same model_fn does not share). Files of the older path-keyed
format (every key led by the model's name) still load. So a point saved from a search's network
(say with SigmoidScores) loads into a network of the same architecture with any other mask rule
(FixedMask to retrain a ticket). Points live in workdir/init/rewind_<name>.npz, saved during
round 0 by RewindPointSaver (rewind_point_saver builds it for a search).

Workdirs of older IMP versions hold IMP's own format instead: θ_k as a Keras weights file of the
whole network, workdir/init/rewind_<k>it.weights.h5, and θ0 only as workdir/init/
weights.weights.h5; `rewind` reads those when the .npz is absent (legacy_rewind_path).
"""
import os
import re
import tempfile

import keras
import numpy as np

from tf_lottery.errors import ConfigError
from tf_lottery.export.plain import network_of
from tf_lottery.export.ticket_file import ticket_variables
from tf_lottery.search import rounds

INIT = "init"
# '<N>ep' with N a whole or decimal number of epochs, '<N>it' with N a whole number of steps
_TIME = re.compile(r"^(?:(\d+(?:\.\d+)?)(ep)|(\d+)(it))$")


def is_rewind_point(spec):
    """True if `spec` names a rewind point: 'init', '<N>ep' or '<N>it'."""
    return spec == INIT or (isinstance(spec, str) and _TIME.match(spec) is not None)


def check_rewind_point(spec, name="rewind_to", allow_none=True, also=()):
    """`spec` if it names a rewind point ('init', '<N>ep', '<N>it'; None when allowed; or one of
    the search's own modes `also`, e.g. IMP's 'lr' and 'finetune'), else a ConfigError."""
    if (spec is None and allow_none) or (isinstance(spec, str) and spec in also):
        return spec
    if is_rewind_point(spec):
        return spec
    others = "".join(f", {mode!r}" for mode in also) + (" or None" if allow_none else "")
    raise ConfigError(f"{name} must be 'init', '<N>ep' (after N epochs, e.g. '2ep' or '0.5ep') "
                      f"or '<N>it' (after N steps){others}, got {spec!r}")


def rewind_steps(spec, steps_per_epoch, name="rewind_to"):
    """Optimizer steps of round 0 after which rewind point `spec` is taken: 0 for 'init',
    '2ep' -> 2·steps_per_epoch, '0.5ep' -> the nearest step, '500it' -> 500."""
    spec = check_rewind_point(spec, name, allow_none=False)
    if spec == INIT:
        return 0
    epochs, _, steps, _ = _TIME.match(spec).groups()
    if epochs is not None:
        return int(round(float(epochs) * int(steps_per_epoch)))
    return int(steps)


def rewind_path(workdir, spec):
    """workdir/init/rewind_<spec>.npz, where point `spec` is kept."""
    return os.path.join(rounds.init_dir(workdir), f"rewind_{spec}.npz")


def legacy_rewind_path(workdir, steps):
    """Where IMP kept a rewind point before this module was its only home: θ0 in
    init/weights.weights.h5 (the round structure's own initial state), θ_k (k > 0 steps) in
    init/rewind_<k>it.weights.h5, both Keras weights files of the whole network."""
    if not steps:
        return os.path.join(rounds.init_dir(workdir), rounds.WEIGHTS_FILE)
    return os.path.join(rounds.init_dir(workdir), f"rewind_{int(steps)}it.weights.h5")


def _without_model_name(weights):
    """{key: array} of a file of the older format, keyed by variable path (every key led by one
    model name), the model name dropped; None when the keys do not share a leading component."""
    heads = {key.split("/", 1)[0] for key in weights}
    if len(heads) != 1 or not all("/" in key for key in weights):
        return None
    return {key.split("/", 1)[1]: value for key, value in weights.items()}


def dense_weights(network):
    """A snapshot of the network's dense weights to rewind to: {key: numpy array} of every
    kernel, bias and batch-norm variable, never masks, scores or mask-rule state.

    `w0 = dense_weights(model)` before training and `assign_dense_weights(model, w0)` after
    pruning is the rewind of IMP; Keras's own `model.get_weights()` / `set_weights()` would
    also put the masks of that moment back (all ones: the pruning undone).

    Args:
      network: a masked network or a SparseModel.
    """
    return {path: keras.ops.convert_to_numpy(v) for path, v in ticket_variables(network).items()}


def assign_dense_weights(network, weights):
    """Rewind: set the network's dense weights from a `dense_weights` snapshot, leaving masks,
    scores and mask-rule state as they are.

    Args:
      network: a masked network or a SparseModel.
      weights: {key: array} naming exactly the network's dense variables (keys led by a model
        name, the old format, are read without it); otherwise a ConfigError.
    """
    variables = ticket_variables(network)
    if set(weights) != set(variables):
        legacy = _without_model_name(weights)
        if legacy is not None and set(legacy) == set(variables):
            weights = legacy
    missing, unknown = sorted(set(variables) - set(weights)), sorted(set(weights) - set(variables))
    if missing or unknown:
        raise ConfigError(f"rewind weights do not fit this network: missing {missing[:5]}, "
                          f"unknown {unknown[:5]} (another architecture?)")
    for path, variable in variables.items():
        value = np.asarray(weights[path])
        if value.shape != tuple(variable.shape):
            raise ConfigError(f"rewind weight {path} has shape {value.shape}, the network's "
                              f"{tuple(variable.shape)}")
        variable.assign(value)


def save_dense_weights(path, network):
    """Write the dense weights atomically (a kill leaves no torn file)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz")
    os.close(fd)
    np.savez(tmp, **dense_weights(network))
    os.replace(tmp, path)


def load_dense_weights(path):
    if not os.path.exists(path):
        raise ConfigError(f"no rewind point at {path}: it is saved during round 0 of a search "
                          f"whose rewind_to or evaluation_rewind_to names it")
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def rewind(network, path):
    """w ← w_k: the network's dense weights from the rewind point at `path`; masks, scores and
    rule state are left as they are."""
    assign_dense_weights(network, load_dense_weights(path))


def dense_weights_from_file(network, path):
    """The dense weights in a Keras weights file of the whole network (a round's
    weights.weights.h5, an older IMP rewind file), read through `network` (a SparseModel stands
    for its network), whose own state is left as it was."""
    network = network_of(network)
    current = network.get_weights()
    try:
        network.load_weights(path)
        return dense_weights(network)
    finally:
        network.set_weights(current)


def load_rewind_point(network, workdir, spec, steps_per_epoch):
    """{key: array} of the dense weights of point `spec` of the run in `workdir`, read from
    rewind_path, or else from the file an older IMP wrote (legacy_rewind_path) for a workdir
    made before; `network` (the search's) reads the older file. ConfigError if neither exists."""
    path = rewind_path(workdir, spec)
    if not os.path.exists(path):
        legacy = legacy_rewind_path(workdir, rewind_steps(spec, steps_per_epoch))
        if os.path.exists(legacy):
            return dense_weights_from_file(network, legacy)
    return load_dense_weights(path)


def rewind_to_point(network, workdir, spec, steps_per_epoch):
    """w ← w_k of point `spec` of the run in `workdir` (load_rewind_point); masks, scores and
    rule state are left as they are."""
    assign_dense_weights(network, load_rewind_point(network, workdir, spec, steps_per_epoch))


def save_init_point(workdir, network):
    """Save point 'init' (w_0) from the network's current weights unless it exists: call it once
    the initial state is in place (RoundSearch.on_init)."""
    path = rewind_path(workdir, INIT)
    if not os.path.exists(path):
        save_dense_weights(path, network)
    return path


class RewindPointSaver(keras.callbacks.Callback):
    """Saves the dense weights when the optimizer has made `steps` steps, for each
    (path, steps) pair; meant for round 0. The file is written atomically before the epoch's
    checkpoint (callbacks run before fit_round's EpochCheckpoint), so a run resumed after that
    point finds it, and a run resumed before it passes the step again and saves it then."""

    def __init__(self, points, network):
        super().__init__()
        self.points = [(path, int(steps)) for path, steps in points]
        self.network = network

    def _save_due(self):
        done = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        for path, steps in self.points:
            if steps == done:
                save_dense_weights(path, self.network)

    def on_train_begin(self, logs=None):
        self._save_due()

    def on_train_batch_end(self, batch, logs=None):
        self._save_due()


def rewind_point_saver(network, workdir, specs, steps_per_epoch, round_steps):
    """The RewindPointSaver of round 0 for the step-based points among `specs` (None and 'init'
    are skipped: w_0 is saved by save_init_point), or None when there are none. ConfigError if a
    point lies beyond the `round_steps` steps of round 0."""
    points = []
    for spec in sorted({s for s in specs if s not in (None, INIT)}):
        steps = rewind_steps(spec, steps_per_epoch)
        if steps > round_steps:
            raise ConfigError(f"rewind point {spec!r} ({steps} steps) lies beyond round 0 "
                              f"({round_steps} steps)")
        points.append((rewind_path(workdir, spec), steps))
    return RewindPointSaver(points, network) if points else None
