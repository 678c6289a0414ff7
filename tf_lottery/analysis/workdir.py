"""A run's workdir read back without building its network: round metrics, ticket masks and raw
kernels straight from the files of the round structure (tf_lottery/search/rounds.py), plus a
plain account of what the workdir lacks, so that a finished run and a partly finished (or killed,
or pruned-for-space) one are read the same way.

Kernels come from the `.weights.h5` files with h5py: Keras 3 stores every layer's variables
under a `vars` group whose `name` attribute is the layer name, in the order the layer tracked
them, trainable ones first; a Dense/Conv/DepthwiseConv kernel is created first, so it is
`vars/0`. A layer counts as a kernel layer when its `vars/0` has two or more dimensions (for a
masked layer its shape is checked against its mask).

Metric keys a round's metrics.json may hold, written by whoever measures them and read here and by
bin/report (the round loop writes the others: test_accuracy, remaining_fraction, ...):

    lmc                     linear mode connectivity (analysis/connectivity.py) between two
                            networks, e.g. the previous round's and this round's (Maene Sec. 4.3):
                            {"alphas": [α...], "errors": [test error at α...],
                             "barrier": max error − mean of the end errors,
                             "between": [round a, round b] (optional), "losses": [...] (optional)}
                            (lmc_metrics builds it from interpolate's result); IMPSearch
                            writes it for two copies of a round trained with different SGD noise
                            (Frankle et al. 2020 instability)
    lmc_rounds              the same between the previous round's trained network and this
                            round's (IMPSearch, Maene Sec. 4.3), "between": [r - 1, r]
    dying_ratio             edge-popup's Eq. 2 after the round (search/edge_popup.py)
    activation_sparsity     {layer name: fraction of exact zeros after its ReLU} at the round's end
    analysis                per-epoch records of the analysis callbacks of the round's training,
                            [{"epoch": e (0-based in the round), name: value, ...}] (base.py);
                            `activation_sparsity/<layer>` entries give the per-layer sparsity
                            when `activation_sparsity` itself is absent
    ticket_test_accuracy    the binary ticket with the round's final weights, where the
                            search's network is not its ticket (continuous sparsification:
                            test_accuracy is the soft mask σ(β·s)'s, this b(s)'s, what the
                            exported model scores)
    control_test_accuracy   a control (reinit or random prune) trained like the ticket (IMP)
    retrained_test_accuracy the ticket retrained from its rewind point (ticket evaluation)
"""
import json
import os
import zipfile
import zlib

import h5py
import numpy as np

from tf_lottery import workdir as workdir_lib
from tf_lottery.analysis.angular import angular_distance_matrix
from tf_lottery.analysis.connectivity import lmc_metrics  # noqa: F401 (re-exported)
from tf_lottery.errors import DataError
from tf_lottery.search import rounds

CONFIG_FILE = "config.gin"
EXPORT_SIZES_PATH = os.path.join("ticket", "export_sizes.json")  # Experiment.export writes it
ACTIVATION_PREFIX = "activation_sparsity/"


def read_kernels(path, masks=None):
    """{layer name: raw kernel array} of every kernel layer in a `.weights.h5` file.

    `masks` ({layer name: 0/1 array}) must name kernel layers of the file, with their shapes.
    Raises DataError when the file cannot be read or does not match the masks.
    """
    kernels = {}

    def visit(name, group):
        if not isinstance(group, h5py.Group) or name.rsplit("/", 1)[-1] != "vars":
            return
        first = group.get("0")
        if isinstance(first, h5py.Dataset) and first.ndim >= 2:
            parent = name.split("/")[-2] if "/" in name else "model"
            kernels[str(group.attrs.get("name", parent))] = first[()]

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as e:
        raise DataError(f"cannot read weights file {path}: {e}") from None
    for name, mask in (masks or {}).items():
        if name not in kernels:
            raise DataError(f"{path} holds no kernel for masked layer {name!r}")
        if kernels[name].shape != np.shape(mask):
            raise DataError(f"{path}: kernel of {name!r} has shape {kernels[name].shape}, "
                            f"its mask {np.shape(mask)}")
    return kernels


class Round:
    """One round_NN directory: which files it has and its metrics (None when absent or
    unreadable; `problem` then says why)."""

    def __init__(self, workdir, index):
        self.index = index
        self.path = rounds.round_dir(workdir, index)
        self.name = os.path.basename(self.path)
        self.masks_path = os.path.join(self.path, rounds.MASKS_FILE)
        self.weights_path = os.path.join(self.path, rounds.WEIGHTS_FILE)
        self.metrics, self.problem = None, None
        metrics_path = os.path.join(self.path, rounds.METRICS_FILE)
        if not os.path.exists(metrics_path):
            self.problem = f"{self.name} has no {rounds.METRICS_FILE}: unfinished"
        else:
            self.problem = workdir_lib.verify_manifest(self.path)
            if self.problem:
                self.problem += ": damaged, not reported (a rerun of bin/train recomputes it)"
                return
            try:
                with open(metrics_path) as f:
                    self.metrics = json.load(f)
            except (OSError, ValueError) as e:
                self.problem = f"{self.name}/{rounds.METRICS_FILE} is unreadable ({e})"

    @property
    def complete(self):
        return self.metrics is not None

    @property
    def has_masks(self):
        return os.path.exists(self.masks_path)

    @property
    def has_weights(self):
        return os.path.exists(self.weights_path)

    def get(self, key, default=None):
        return (self.metrics or {}).get(key, default)


class Workdir:
    """A run directory read from disk. Raises DataError when `path` is not a directory."""

    def __init__(self, path):
        if not os.path.isdir(path):
            raise DataError(f"workdir {path} does not exist or is not a directory")
        self.path = path
        self.name = os.path.basename(os.path.normpath(path))
        indices = sorted(int(m.group(1)) for m in map(rounds.ROUND_PATTERN.match, os.listdir(path))
                         if m)
        self.rounds = [Round(path, i) for i in indices]
        self.init_weights_path = os.path.join(rounds.init_dir(path), rounds.WEIGHTS_FILE)
        config_path = os.path.join(path, CONFIG_FILE)
        self.config = None
        if os.path.exists(config_path):
            with open(config_path) as f:
                self.config = f.read()

    @property
    def complete_rounds(self):
        return [r for r in self.rounds if r.complete]

    @property
    def num_rounds(self):
        """The number of rounds the run was set up for (recorded in metrics), or None."""
        planned = [r.get("num_rounds") for r in self.complete_rounds if r.get("num_rounds")]
        return planned[-1] if planned else None

    @property
    def finished(self):
        complete = self.complete_rounds
        return (bool(complete) and len(complete) == len(self.rounds)
                and self.num_rounds in (None, len(complete)))

    @property
    def label(self):
        """algorithm[/variant] of the run (from its metrics), else the directory name."""
        for r in self.complete_rounds:
            if r.get("algorithm"):
                variant = r.get("variant")
                return f"{r.get('algorithm')}/{variant}" if variant else r.get("algorithm")
        return self.name

    def lacks(self):
        """One line per thing the workdir lacks, e.g. 'round_02 has no metrics.json: unfinished'."""
        lines = []
        if not self.rounds:
            lines.append("no round_NN directory: no round has started")
        present = {r.index for r in self.rounds}
        top = max(present, default=-1)
        lines += [f"round_{i:02d} is missing" for i in range(top) if i not in present]
        for r in self.rounds:
            if r.problem:
                lines.append(r.problem)
            if not r.has_masks:
                lines.append(f"{r.name} has no {rounds.MASKS_FILE}")
            if not r.has_weights:
                lines.append(f"{r.name} has no {rounds.WEIGHTS_FILE}")
        if self.num_rounds is not None and self.num_rounds > top + 1:
            first, last = f"round_{top + 1:02d}", f"round_{self.num_rounds - 1:02d}"
            span = first if first == last else f"{first} to {last}"
            lines.append(f"{span} of {self.num_rounds} rounds not started")
        if not os.path.exists(self.init_weights_path):
            lines.append(f"no init/{rounds.WEIGHTS_FILE}: no initialisation to compare with")
        if self.config is None:
            lines.append(f"no {CONFIG_FILE} (run without bin/train?)")
        return lines

    def export_sizes(self):
        """{artifact: {'bytes', 'gzip_bytes'}} of the exported ticket (ticket/export_sizes.json,
        written by export_ticket), or None where the workdir has none. Raises DataError when
        the file cannot be read."""
        path = os.path.join(self.path, EXPORT_SIZES_PATH)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                sizes = json.load(f)
            return {str(name): {"bytes": int(entry["bytes"]),
                                "gzip_bytes": int(entry["gzip_bytes"])}
                    for name, entry in sizes.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(f"cannot read {path} ({type(e).__name__})") from None

    def masks(self, round_):
        try:
            return rounds.load_masks(round_.masks_path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError(f"cannot read {round_.masks_path} ({type(e).__name__}); a rerun of "
                            f"bin/train recomputes the round") from None

    def network(self, round_):
        """(raw kernels, masks) of a round from its files."""
        masks = self.masks(round_)
        return read_kernels(round_.weights_path, masks), masks

    def init_kernels(self):
        return read_kernels(self.init_weights_path)

    def comparable_rounds(self):
        """The complete rounds that have both masks and weights."""
        return [r for r in self.complete_rounds if r.has_masks and r.has_weights]

    def angular_distances(self):
        """(row names, matrix) of angular distances between the comparable rounds, with a last
        row/column for the initialisation when init/ has weights (Maene Fig. 4); each round is
        its raw kernels masked by its masks.npz."""
        usable = self.comparable_rounds()
        networks = [self.network(r) for r in usable]
        names = [r.name for r in usable]
        init = None
        if os.path.exists(self.init_weights_path) and networks:
            init = self.init_kernels()
            names.append("init")
        return names, angular_distance_matrix(networks, initialization=init)

    def mask_overlaps(self):
        """(row names, matrix) of |m1 ∧ m2| / |m1 ∨ m2| between the comparable rounds' ticket
        masks, over the layers both masks name."""
        usable = self.comparable_rounds()
        masks = [self.masks(r) for r in usable]
        overlaps = np.ones((len(masks), len(masks)))
        for i, a in enumerate(masks):
            for j in range(i + 1, len(masks)):
                b = masks[j]
                shared = sorted(set(a) & set(b))
                both = sum(int(np.sum((a[n] != 0) & (b[n] != 0))) for n in shared)
                either = sum(int(np.sum((a[n] != 0) | (b[n] != 0))) for n in shared)
                overlaps[i, j] = overlaps[j, i] = both / either if either else 1.0
        return [r.name for r in usable], overlaps

    def activation_sparsity(self, round_):
        """{layer: fraction of zero activations} of a round: metrics['activation_sparsity'], else
        the last per-layer record of metrics['analysis']; {} when neither has any."""
        if round_.get("activation_sparsity"):
            return dict(round_.get("activation_sparsity"))
        for record in reversed(round_.get("analysis") or []):
            layers = {k[len(ACTIVATION_PREFIX):]: v for k, v in record.items()
                      if k.startswith(ACTIVATION_PREFIX)}
            if layers:
                return layers
        return {}
