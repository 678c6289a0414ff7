"""How big a ticket is to ship: on-disk sizes of exports, in-memory sizes of folded weights.

Every size is given raw and gzip'd (gzip level 6, the `gzip` command's default, header time 0,
so that the same content always gives the same number). Zeros a pruned kernel holds compress
away, so the gzip'd size is what unstructured sparsity saves in a download; the raw size saves
nothing until an encoding uses the zeros (TFLite's sparse tensors, `export_tflite(sparse=True)`).

* `export_sizes(path)`: a file's size and the size of the file gzip'd; a directory's raw size is
  the sum of its files' sizes, its gzip'd size that of a gzip'd tar of it (`tar czf`, what one
  would ship: one archive; entries sorted, times and owners zeroed). Nothing is written: the
  archive is streamed into a byte counter.
* `weights_sizes(network, masks)`: the weights an export of the network holds (masked kernels
  folded, θ ⊙ m with every pruned entry +0.0, as `plain.folded_kernel`; mask, scores and rule
  state left out; every other weight as it is) as float32, raw and gzip'd, computed in memory:
  a round's `weights_bytes` and `weights_gzip_bytes`.
"""
import gzip
import os
import tarfile

import keras
import numpy as np

from tf_lottery.errors import ConfigError

GZIP_LEVEL = 6
_CHUNK = 1 << 20


class _ByteCounter:
    """A write-only file object that keeps only the number of bytes written to it."""

    def __init__(self):
        self.count = 0

    def write(self, data):
        self.count += len(data)
        return len(data)

    def flush(self):
        pass


def _gzip_writer(counter):
    return gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=GZIP_LEVEL, mtime=0,
                         filename="")


def gzip_size(data):
    """Bytes of `data` (bytes, or an iterable of chunks: bytes or 1-d uint8 arrays) after gzip
    at level 6."""
    counter = _ByteCounter()
    with _gzip_writer(counter) as writer:
        for chunk in ([data] if isinstance(data, (bytes, bytearray, memoryview)) else data):
            writer.write(chunk)
    return counter.count


def _file_chunks(path):
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(_CHUNK), b"")


def _plain_tar_info(info):
    """Drop what differs between two copies of the same files (times, owners)."""
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def export_sizes(path):
    """{'bytes', 'gzip_bytes'} of an export: a file, or a directory (raw: the sum of its files'
    sizes; gzip: a gzip'd tar of it, see the module docstring). Writes nothing.

    Args:
      path: a file or directory (a SavedModel, a .tflite or .keras file, ticket.npz).
    Returns: {'bytes': int, 'gzip_bytes': int}.
    Raises:
      FileNotFoundError: nothing at `path`.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return {"bytes": os.path.getsize(path), "gzip_bytes": gzip_size(_file_chunks(path))}
    if not os.path.isdir(path):
        raise FileNotFoundError(2, "no export file or directory", path)
    raw = sum(os.path.getsize(os.path.join(folder, name))
              for folder, _, names in os.walk(path) for name in names)
    counter = _ByteCounter()
    with _gzip_writer(counter) as writer, tarfile.open(fileobj=writer, mode="w|",
                                                       format=tarfile.PAX_FORMAT) as tar:
        tar.add(path, arcname=os.path.basename(os.path.normpath(path)), filter=_plain_tar_info)
    return {"bytes": raw, "gzip_bytes": counter.count}


def plain_weight_values(network, masks=None):
    """The values of every weight an export of `network` holds, as numpy arrays: each masked
    kernel folded (raw kernel × its 0/1 mask), mask state (mask, scores, rule variables) and
    ghost modules left out, every other weight as it is; shared variables once.

    Args:
      network: a Keras model (masked or not) or a SparseModel.
      masks: {masked layer name: 0/1 mask} to fold instead of the layers' own binary masks
        (a search's ticket); layers it does not name use `binary_mask()`.
    """
    from tf_lottery.export.plain import fold, network_of
    from tf_lottery.layers.ghosts import ghost_modules
    from tf_lottery.layers.masked import dense_variables, masked_layers

    network, masks = network_of(network), dict(masks or {})
    if not isinstance(network, keras.Model):
        raise ConfigError(f"weights sizes need a Keras model, got {type(network).__name__}")
    folded = {id(layer.raw_kernel): layer for layer in masked_layers(network)}
    activations, skips = ghost_modules(network)
    left_out = {id(v) for layer in (*activations, *skips) for v in layer.weights}
    values = []
    for variable in dense_variables(network):
        if id(variable) in left_out:
            continue
        value = keras.ops.convert_to_numpy(variable)
        layer = folded.get(id(variable))
        if layer is not None:
            mask = masks[layer.name] if layer.name in masks else layer.binary_mask()
            value = fold(value, keras.ops.convert_to_numpy(mask))
        values.append(value)
    return values


def weights_sizes(network, masks=None):
    """{'weights_bytes', 'weights_gzip_bytes'}: the weights an export of `network` holds
    (`plain_weight_values`) as float32, raw and gzip'd (level 6), concatenated in the model's
    weight order; computed in memory, nothing written.

    Args: as for `plain_weight_values`.
    """
    arrays = [np.ascontiguousarray(value, dtype=np.float32)
              for value in plain_weight_values(network, masks)]
    return {"weights_bytes": int(sum(a.nbytes for a in arrays)),
            "weights_gzip_bytes": gzip_size(a.reshape(-1).view(np.uint8) for a in arrays)}


def human_bytes(count):
    """'512 B', '1.2 kB', '3.4 MB', '1.1 GB' (powers of 1000, as the sizes in `ls -h --si`)."""
    if not isinstance(count, (int, float)) or isinstance(count, bool):
        return "—"
    if abs(count) < 1000:
        return f"{count:.0f} B"
    for unit in ("kB", "MB", "GB", "TB"):
        count /= 1000
        if abs(count) < 999.95 or unit == "TB":
            return f"{count:.1f} {unit}"
