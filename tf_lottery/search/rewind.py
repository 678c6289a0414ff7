"""Rewind points: the weights a ticket (re)starts from, named with their unit (DESIGN.md):

    'init'    w_0, the initialisation (Frankle & Carbin 2019)
    '2ep'     w_k after 2 epochs of round 0 (Frankle et al. 2019; the CS paper's ResNet tickets
              start from "the iterates from the end of epoch 2", Sec. 4.2)
    '500it'   w_k after 500 optimizer steps of round 0

A rewind point holds *dense* weights only: kernels, biases, batch-norm parameters and
statistics, never masks, scores or mask-rule state, keyed by layer names from the network down
(export.ticket_file.ticket_variables: 'fc1/kernel'), never by variable path, which carries the
network's own name when the network is a Sequential ('sequential_3/fc1/kernel': an automatic
name that the next build of the same model_fn does not share). Files of the older path-keyed
format (every key led by the model's name) still load. So a point saved from a search's network
(say with SigmoidScores) loads into a network of the same architecture with any other mask rule
(FixedMask to retrain a ticket). Points live in workdir/init/rewind_<name>.npz.
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
_STEPS = re.compile(r"^(\d+)(ep|it)$")


def check_rewind_point(spec, name="rewind_to", allow_none=True):
    """`spec` if it names a rewind point ('init', '<N>ep', '<N>it'; None when allowed)."""
    if spec is None and allow_none:
        return None
    if spec == INIT or (isinstance(spec, str) and _STEPS.match(spec)):
        return spec
    raise ConfigError(f"{name} must be 'init', '<N>ep' (after N epochs) or '<N>it' (after N "
                      f"steps){' or None' if allow_none else ''}, got {spec!r}")


def rewind_steps(spec, steps_per_epoch):
    """Optimizer steps of round 0 after which rewind point `spec` is taken (0 for 'init')."""
    spec = check_rewind_point(spec, allow_none=False)
    if spec == INIT:
        return 0
    amount, unit = _STEPS.match(spec).groups()
    return int(amount) * (int(steps_per_epoch) if unit == "ep" else 1)


def rewind_path(workdir, spec):
    return os.path.join(rounds.init_dir(workdir), f"rewind_{spec}.npz")


def _dense_variables(network):
    """[(key, variable)] of every variable but the masks, scores and mask-rule state, keyed as
    the ticket file keys them (ticket_variables: layer names from the network down); a
    SparseModel stands for its network."""
    return list(ticket_variables(network_of(network)).items())


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
    return {path: keras.ops.convert_to_numpy(v) for path, v in _dense_variables(network)}


def assign_dense_weights(network, weights):
    """Rewind: set the network's dense weights from a `dense_weights` snapshot, leaving masks,
    scores and mask-rule state as they are.

    Args:
      network: a masked network or a SparseModel.
      weights: {key: array} naming exactly the network's dense variables (keys led by a model
        name, the old format, are read without it); otherwise a ConfigError.
    """
    variables = dict(_dense_variables(network))
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


class RewindPointSaver(keras.callbacks.Callback):
    """Saves the dense weights when the optimizer has made `steps` steps, for each
    (path, steps) pair; meant for round 0 (a resumed round replays the step and saves again)."""

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
