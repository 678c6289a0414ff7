"""The round structure on disk, the same for every search.

    workdir/
      config.gin               the operative gin config of the run
      init/                    the starting point every round may rewind to (weights, scores)
      round_00/
        masks.npz              the round's ticket masks {layer name: 0/1 array}
        weights.weights.h5     every variable of the network at the end of the round
        metrics.json           written last: its presence marks the round complete
        checkpoints/           in-round epoch checkpoints (resume after a kill)
      round_01/ ...
      tensorboard/

A round = fit, measure, decide the next mask, checkpoint. A killed run resumes at the first round
without metrics.json, from that round's last epoch checkpoint.
"""
import json
import os
import re

import numpy as np

from tf_lottery import workdir as workdir_lib

ROUND_PATTERN = re.compile(r"^round_(\d+)$")
METRICS_FILE = "metrics.json"
MASKS_FILE = "masks.npz"
WEIGHTS_FILE = "weights.weights.h5"


def round_dir(workdir, index):
    return os.path.join(workdir, f"round_{index:02d}")


def init_dir(workdir):
    return os.path.join(workdir, "init")


def write_json(path, data):
    """Write JSON atomically (a kill leaves the old file or the new one, never half of one)."""
    with workdir_lib.atomic_write(path) as f:
        json.dump(data, f, indent=2, sort_keys=True, default=_to_builtin)


def _to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def save_masks(path, masks):
    with workdir_lib.atomic_write(path, "wb") as f:
        np.savez_compressed(f, **{name: np.asarray(m, np.uint8) for name, m in masks.items()})


def load_masks(path):
    with np.load(path) as data:
        return {name: data[name].astype(np.float32) for name in data.files}


def save_weights(path, model):
    """model.save_weights through a temporary file, so a kill never leaves a torn file; HDF5
    writes in RAM and the file is copied to disk, so that a full disk is an OSError naming
    `path`, never a crash of HDF5 (see workdir.staged_in_memory)."""
    size = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize + 4096  # + HDF5 metadata
               for v in model.weights) + (1 << 20)
    with workdir_lib.io_errors(path), workdir_lib.atomic_path(path, ".weights.h5") as tmp:
        with workdir_lib.staged_in_memory(tmp, size, ".weights.h5") as stage:
            model.save_weights(stage)


def save_round(workdir, index, model, masks, metrics):
    """Write round `index`: masks, all weights, then metrics.json (which marks it complete)."""
    directory = round_dir(workdir, index)
    os.makedirs(directory, exist_ok=True)
    save_masks(os.path.join(directory, MASKS_FILE), masks)
    save_weights(os.path.join(directory, WEIGHTS_FILE), model)
    write_json(os.path.join(directory, METRICS_FILE), {"round": index, **metrics})


def is_complete(workdir, index):
    return os.path.exists(os.path.join(round_dir(workdir, index), METRICS_FILE))


def completed_rounds(workdir):
    """Indices of the complete rounds, ascending."""
    if not os.path.isdir(workdir):
        return []
    found = []
    for name in os.listdir(workdir):
        match = ROUND_PATTERN.match(name)
        if match and is_complete(workdir, int(match.group(1))):
            found.append(int(match.group(1)))
    return sorted(found)


def load_metrics(workdir, index):
    with open(os.path.join(round_dir(workdir, index), METRICS_FILE)) as f:
        return json.load(f)


def load_round_masks(workdir, index):
    return load_masks(os.path.join(round_dir(workdir, index), MASKS_FILE))


def round_weights_path(workdir, index):
    return os.path.join(round_dir(workdir, index), WEIGHTS_FILE)


def all_metrics(workdir):
    """Metrics of every complete round, in order."""
    return [load_metrics(workdir, i) for i in completed_rounds(workdir)]
