"""Interop with tensorflow-model-optimization (tfmot): tickets to and from its pruned models.

    pip install 'tf_lottery[tfmot]'      # tensorflow-model-optimization + tf-keras

    ticket_to_tfmot('run/ticket/ticket.npz', 'pruned.h5')  # a tf_keras model in tfmot wrappers
    tfmot_to_ticket('pruned.h5', 'from_tfmot.npz')         # a tfmot-pruned model as a ticket

Why a subprocess: tfmot supports only Keras 2 (tf_keras), and importing it sets
TF_USE_LEGACY_KERAS=1, which makes `tf.keras` Keras 2 for the whole process — while tf_lottery
is Keras 3 throughout. So this module never imports tfmot: each function runs the tfmot part in
a fresh Python process (tf_lottery.interop._tfmot_worker) and the two sides exchange files — the
plain network as a Keras-neutral graph (tf_lottery.interop.keras_graph) and the masks as .npz.
Tickets are the files of tf_lottery.export (save_ticket / load_ticket).
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np
from absl import logging

from tf_lottery import masks as masks_lib
from tf_lottery.errors import ConfigError
from tf_lottery.export import load_ticket, read_ticket_masks, save_ticket, to_plain_model
from tf_lottery.interop import keras_graph
from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.models import sparsify

REQUIRED = ("tensorflow_model_optimization", "tf_keras")
_WORKER = "tf_lottery.interop._tfmot_worker"
_MASKS_FILE = "masks.npz"


def tfmot_available():
    """Whether tfmot and tf_keras are installed (found without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in REQUIRED)


def _require_tfmot():
    if not tfmot_available():
        missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
        raise ConfigError(f"tfmot interop needs {', '.join(missing)}: "
                          f"pip install 'tf_lottery[tfmot]'")


def _run_worker(*args):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": path,
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    result = subprocess.run([sys.executable, "-m", _WORKER, *map(str, args)], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        reason = next((l for l in reversed(lines) if l.startswith("error: ")), lines[-1])
        raise ConfigError(f"tfmot {args[0]} failed: {reason.removeprefix('error: ')}")
    return result.stdout


def ticket_to_tfmot(ticket_path, out_path):
    """Write the ticket as a tf_keras model whose masked layers are wrapped in tfmot's
    prune_low_magnitude, each wrapper's mask the ticket's (pruned kernel entries are zero).

    `out_path` ending in .h5 gives an HDF5 file, in .keras a tf_keras .keras file, otherwise a
    SavedModel folder; load it with tf_keras under `tfmot.sparsity.keras.prune_scope()`. Each
    wrapper's ConstantSparsity schedule holds its layer's ticket sparsity, so fine-tuning with
    tfmot keeps it (tfmot re-prunes by magnitude). Layers tfmot cannot prune (it registers
    DepthwiseConv2D with no prunable weight) get no wrapper: their kernels hold the ticket's
    zeros, and a warning names them.
    Returns {'path': out_path, 'unwrapped': [names of those layers]}.
    """
    _require_tfmot()
    masks = read_ticket_masks(ticket_path)
    plain = to_plain_model(load_ticket(ticket_path))
    with tempfile.TemporaryDirectory() as tmp:
        keras_graph.save(plain, tmp)
        np.savez(os.path.join(tmp, _MASKS_FILE), **masks)
        output = _run_worker("to_tfmot", tmp, os.path.join(tmp, _MASKS_FILE),
                             os.path.abspath(out_path))
    unwrapped = json.loads(output.strip().splitlines()[-1])["unwrapped"]
    if unwrapped:
        logging.warning("tfmot cannot prune %s: no pruning wrapper, the ticket's zeros are in "
                        "the kernel", ", ".join(unwrapped))
    return {"path": os.fspath(out_path), "unwrapped": unwrapped}


def tfmot_to_ticket(model_path, out_ticket_path, metadata=None):
    """Read a tfmot-pruned tf_keras model (prune_low_magnitude wrappers) into a weak ticket
    file: one mask per wrapped layer (the wrapper's mask), its weights as they are, the other
    layers dense. Returns the path written (see tf_lottery.export.save_ticket)."""
    _require_tfmot()
    with tempfile.TemporaryDirectory() as tmp:
        _run_worker("from_tfmot", os.path.abspath(model_path), tmp)
        plain = keras_graph.load(keras, tmp)
        with np.load(os.path.join(tmp, _MASKS_FILE)) as data:
            masks = {name: data[name] for name in data.files}
    network = sparsify(plain, rule=FixedMask(), exclude=lambda layer: layer.name not in masks)
    masks_lib.set_masks(network, masks)
    metadata = {"source": "tensorflow_model_optimization", "model": os.fspath(model_path),
                **dict(metadata or {})}
    return save_ticket(network, out_ticket_path, metadata=metadata)
