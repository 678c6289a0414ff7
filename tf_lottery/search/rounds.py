"""The round structure on disk, the same for every search.

    workdir/
      config.gin               the operative gin config of the run
      init/                    the starting point every round may rewind to (weights, scores)
      round_00/
        masks.npz              the round's ticket masks {layer name: 0/1 array}
        weights.weights.h5     every variable of the network at the end of the round
        history.json           the per-epoch logs of the round's training
        metrics.json           its presence marks the round complete
        manifest.json          written last: sha256 of the files above (workdir.write_manifest)
        checkpoints/           in-round epoch checkpoints (resume after a kill)
      round_01/ ...
      tensorboard/

A round = fit, measure, decide the next mask, checkpoint. A killed run resumes at the first round
without metrics.json, from that round's last epoch checkpoint. Before it does, `set_aside_damaged`
checks init/ and every complete round against its manifest: the first that fails is renamed
round_NN.damaged (with every later round, which was computed from it) and recomputed.
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
HISTORY_FILE = "history.json"  # written by training/fitting.py
MANIFEST_FILE = workdir_lib.MANIFEST_FILE
ROUND_FILES = (MASKS_FILE, WEIGHTS_FILE, HISTORY_FILE, METRICS_FILE)  # in the manifest


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
    seal(directory)


def seal(directory):
    """Write the manifest of a complete round (or of init/) last."""
    workdir_lib.write_manifest(directory, [name for name in ROUND_FILES
                                           if os.path.exists(os.path.join(directory, name))])


def save_init(workdir, model):
    """init/weights.weights.h5 and its manifest."""
    save_weights(os.path.join(init_dir(workdir), WEIGHTS_FILE), model)
    seal(init_dir(workdir))


def set_aside_damaged(workdir, report=print):
    """Check init/ and the complete rounds against their manifests (sealing a complete one that
    has none yet: killed between its metrics and its manifest). The first damaged one is renamed
    <name>.damaged, with every later round (they were computed from it), so that a rerun
    recomputes them; one line per damaged folder goes to `report`. Returns the lines."""
    lines = []
    folders = []
    if os.path.isdir(init_dir(workdir)):
        folders.append(init_dir(workdir))
    folders += [round_dir(workdir, i) for i in completed_rounds(workdir)]
    for position, folder in enumerate(folders):
        problem = workdir_lib.verify_manifest(folder)
        if problem is None:
            if not os.path.exists(os.path.join(folder, MANIFEST_FILE)):
                seal(folder)
            continue
        later = [f for f in _all_round_dirs(workdir) if f > folder and f != folder]
        for damaged in [folder, *later]:
            moved = workdir_lib.set_aside(damaged)
            what = "fails verification" if damaged == folder else "was computed from it"
            line = (f"{os.path.basename(damaged)} {what}"
                    f"{f' ({problem})' if damaged == folder else ''}; set aside as "
                    f"{os.path.basename(moved)}, to be recomputed")
            lines.append(line)
            report(line)
        break
    return lines


def _all_round_dirs(workdir):
    """Every round_NN folder, complete or not, in order (init/ sorts first)."""
    return sorted(os.path.join(workdir, name) for name in os.listdir(workdir)
                  if ROUND_PATTERN.match(name))


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
    """The masks of a complete round, checked against its manifest (DataError if damaged)."""
    problem = workdir_lib.verify_manifest(round_dir(workdir, index))
    if problem:
        from tf_lottery.errors import DataError

        raise DataError(f"{workdir}: {problem}")
    return load_masks(os.path.join(round_dir(workdir, index), MASKS_FILE))


def round_weights_path(workdir, index):
    return os.path.join(round_dir(workdir, index), WEIGHTS_FILE)


def all_metrics(workdir):
    """Metrics of every complete round, in order."""
    return [load_metrics(workdir, i) for i in completed_rounds(workdir)]
