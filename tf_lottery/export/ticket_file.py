"""The ticket file (.npz): a ticket as data, rebuilt into a Keras model by `load_ticket`.

A ticket is an architecture, a 0/1 mask per masked kernel and the weights it starts from. The
file holds (np.savez_compressed, no pickled objects):

* `header`: UTF-8 JSON (as a uint8 array) with
  - `format` ('tf_lottery.ticket'), `format_version`, `tf_lottery_version`, `keras_version`,
    `tensorflow_version`;
  - `kind`: 'weak' (the weights are stored) or 'strong' (frozen random weights, regenerated);
  - `architecture`: the network's Keras config (keras.saving.serialize_keras_object), mask
    rules and initialisers (with their seeds) included;
  - `seed`: the global Keras seed set before regenerating a strong ticket's weights (needed
    only for initialisers without their own seed), or null;
  - `masks`: [{layer, shape, remaining}], one per masked layer, in the order of the arrays;
  - `weights`: [{key, shape, dtype, stored}] for every variable but masks, scores and rule
    state (keys as `ticket_variables` makes them); `stored` says whether its value is in the
    file or regenerated;
  - `metadata`: free JSON (accuracy, ...) plus `sparsity`, `remaining_weights`,
    `total_weights` of the masks;
  - `checksum`: sha256 of every other array (names, dtypes, shapes, bytes); reading checks it,
    and that every mask has its packed size and number of ones and every weight its shape.
* `mask_<i>`: np.packbits of the i-th mask, flattened in C order (shape in the header).
* `weight_<j>`: the j-th stored weight, raw (pruned entries included).

Strong tickets (edge-popup: weights frozen at a seeded random initialisation) store no kernel:
`load_ticket` rebuilds the architecture (under `seed` if given), which draws exactly the same
values from the same initialiser configs, so the file takes about one bit per weight plus the
header. `save_ticket` checks that regeneration in this process is bit-identical and refuses
otherwise; variables that moved in training (batch-norm statistics) are stored.
"""
import copy
import hashlib
import json
import os
import zipfile
import zlib

import keras
import numpy as np
import tensorflow as tf

import tf_lottery
from tf_lottery import compat
from tf_lottery import masks as masks_lib
from tf_lottery import workdir as workdir_lib
from tf_lottery.errors import ConfigError
from tf_lottery.export.plain import network_of
from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.layers.masked import mask_state_ids, masked_layers

FORMAT = "tf_lottery.ticket"
FORMAT_VERSION = 1
KINDS = ("weak", "strong")


def _own_weights(layer, prefix, seen, out):
    # As keras.layers.Layer.weights walks them, keyed by the layer names from the network down
    # (variable.path depends on the name scope a layer was built in, which from_config changes).
    for variable in compat.own_variables(layer):
        if id(variable) not in seen:
            seen.add(id(variable))
            key = f"{prefix}{variable.name}"
            if key in out:
                raise ConfigError(f"two variables are both named {key!r}: give the layers "
                                  f"unique names")
            out[key] = variable
    for child in compat.sublayers(layer, recursive=False):
        _own_weights(child, f"{prefix}{child.name}/", seen, out)


def ticket_variables(network):
    """{key: variable} of what a ticket holds, the network's dense variables: kernels, biases,
    batch norm...; no masks, scores or rule state (layers.masked.mask_state_ids). Keys are layer
    names from the network down plus the variable name ('block/conv1/kernel'); a SparseModel
    stands for its network. The keys of rewind points too (search/rewind.py)."""
    network = network_of(network)
    variables = {}
    _own_weights(network, "", set(), variables)
    masking = mask_state_ids(network)
    return {key: v for key, v in variables.items() if id(v) not in masking}


def _values(variables):
    return {key: np.asarray(keras.ops.convert_to_numpy(v)) for key, v in variables.items()}


def _build(architecture, custom_objects=None):
    try:  # on a copy: deserialisation pops entries from the config it is given
        return keras.saving.deserialize_keras_object(copy.deepcopy(architecture),
                                                     custom_objects=custom_objects)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot rebuild the ticket's architecture: {e}") from None


def regenerate_weights(architecture, seed=None, custom_objects=None):
    """{key: value} of the variables of a freshly built `architecture` (after
    keras.utils.set_random_seed(seed) when seed is not None): a strong ticket's weights."""
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    return _values(ticket_variables(_build(architecture, custom_objects)))


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _weights_from(source, network, architecture, keys):
    """{key: value} for a weak ticket: the network's own values, a Keras weights file of the
    same network (e.g. a round's rewind point), or a dict {key: array}."""
    if source is None:
        return _values(ticket_variables(network))
    if isinstance(source, (str, os.PathLike)):
        rewound = _build(architecture)
        rewound.load_weights(os.fspath(source))
        return _values(ticket_variables(rewound))
    missing = sorted(set(keys) - set(source))
    if missing:
        raise ConfigError(f"weights lack {len(missing)} variables of the ticket, e.g. "
                          f"{missing[:3]}")
    return {key: np.asarray(source[key]) for key in keys}


def _strong_weights(layers, variables, architecture, seed):
    """(values, keys to store) of a strong ticket: what does not regenerate bit-identically.
    Refuses unless every masked kernel does."""
    values = _values(variables)
    regenerated = regenerate_weights(architecture, seed)
    key_of = {id(variable): key for key, variable in variables.items()}
    for layer in layers:
        key = key_of[id(layer.raw_kernel)]
        if not _same_bits(values[key], regenerated[key]):
            raise ConfigError(
                f"not a strong ticket: the kernel of {layer.name!r} is not regenerated "
                f"bit-identically from its initialiser config (seed={seed}); seed the weight "
                f"initialisers, pass the seed the network was built under, or save it as a "
                f"weak ticket (strong=False)")
    return values, {key for key in values if not _same_bits(values[key], regenerated[key])}


def _packed_masks(layers):
    """({'mask_<i>': np.packbits of the flattened 0/1 ticket mask}, header entries)."""
    arrays, entries = {}, []
    for index, layer in enumerate(layers):
        mask = np.asarray(layer.binary_mask()) > 0
        arrays[f"mask_{index}"] = np.packbits(mask.reshape(-1))
        entries.append({"layer": layer.name, "shape": list(mask.shape),
                        "remaining": int(mask.sum())})
    return arrays, entries


def _json_ready(value):
    """Numpy scalars/arrays in metadata as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def save_ticket(model, path, metadata=None, strong=False, seed=None, weights=None):
    """Write the ticket of `model` to the .npz file `path` (format in the module docstring).

    Args:
      model: a masked network or a SparseModel; masks are each rule's 0/1 ticket mask.
      path: the file to write (np.savez_compressed; '.npz' is added if missing).
      metadata: JSON-serialisable dict stored with the ticket (accuracy, algorithm, ...).
      strong: store no weight that regenerates bit-identically from the architecture (frozen
        seeded random weights: edge-popup); refuses if a masked kernel does not.
      seed: for a strong ticket whose initialisers have no seed of their own, the global seed
        (keras.utils.set_random_seed) under which the network was built. Checking it resets the
        global random state of this process.
      weights: for a weak ticket, the weights it starts from if not the model's current ones:
        a Keras weights file of the same network (e.g. a round's rewind point) or
        {key: array} with the keys of `ticket_variables`.
    Returns: the path written.
    """
    network = network_of(model)
    layers = masked_layers(network)
    if not layers:
        raise ConfigError("the model has no masked layers: there is no ticket to save")
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise ConfigError("masked layers must have unique names to be saved as a ticket")
    architecture = keras.saving.serialize_keras_object(network)
    variables = ticket_variables(network)
    if strong:
        if weights is not None:
            raise ConfigError("a strong ticket's weights are its random initialisation; "
                              "weights= is for weak tickets")
        values, stored = _strong_weights(layers, variables, architecture, seed)
    else:
        values = _weights_from(weights, network, architecture, list(variables))
        stored = set(values)

    arrays, mask_entries = _packed_masks(layers)
    weight_entries, stored_count = [], 0
    for key, value in values.items():
        if key in stored:
            arrays[f"weight_{stored_count}"] = value
            stored_count += 1
        weight_entries.append({"key": key, "shape": list(value.shape),
                               "dtype": str(value.dtype), "stored": key in stored})
    remaining = sum(entry["remaining"] for entry in mask_entries)
    total = sum(int(np.prod(entry["shape"])) for entry in mask_entries)
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "tf_lottery_version": tf_lottery.__version__, "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "kind": "strong" if strong else "weak", "seed": None if seed is None else int(seed),
        "architecture": architecture, "masks": mask_entries, "weights": weight_entries,
        "metadata": {"sparsity": 1.0 - remaining / total, "remaining_weights": remaining,
                     "total_weights": total, **_json_ready(dict(metadata or {}))},
    }
    header["checksum"] = _checksum(arrays)
    try:
        text = json.dumps(header)
    except TypeError as e:
        raise ConfigError(f"ticket metadata must be JSON-serialisable: {e}") from None
    arrays["header"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    path = str(path)
    if not path.endswith(".npz"):
        path += ".npz"
    with workdir_lib.atomic_write(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def _checksum(arrays):
    """sha256 of the arrays of a ticket file (every one but the header: names, dtypes, shapes
    and bytes, in name order)."""
    digest = hashlib.sha256()
    for key in sorted(k for k in arrays if k != "header"):
        value = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _check_arrays(path, header, arrays):
    """The arrays hold what the header says: checksum (files written since it was added), the
    number of packed bytes and of ones of every mask, the shape and dtype of every weight."""
    damaged = f"ticket file {path} is damaged"
    if "checksum" in header and header["checksum"] != _checksum(arrays):
        raise ConfigError(f"{damaged}: its arrays do not match the checksum in its header")
    try:
        for index, entry in enumerate(header["masks"]):
            size = int(np.prod(entry["shape"]))
            packed = arrays.get(f"mask_{index}")
            if packed is None or packed.dtype != np.uint8 or packed.size != (size + 7) // 8:
                raise ConfigError(f"{damaged}: the mask of {entry['layer']!r} should have "
                                  f"{(size + 7) // 8} packed bytes, it has "
                                  f"{None if packed is None else packed.size}")
            ones = int(np.unpackbits(packed, count=size).sum())
            if ones != int(entry["remaining"]):
                raise ConfigError(f"{damaged}: the mask of {entry['layer']!r} keeps {ones} "
                                  f"weights, its header says {entry['remaining']}")
        stored = [entry for entry in header["weights"] if entry["stored"]]
        for index, entry in enumerate(stored):
            value = arrays.get(f"weight_{index}")
            if (value is None or list(value.shape) != list(entry["shape"])
                    or str(value.dtype) != entry["dtype"]):
                raise ConfigError(f"{damaged}: weight {entry['key']!r} should be "
                                  f"{entry['dtype']} {tuple(entry['shape'])}, it is "
                                  f"{None if value is None else (str(value.dtype), value.shape)}")
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{damaged}: its header is incomplete ({type(e).__name__}: {e})"
                          ) from None


def _read(path):
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):  # a plain .npy array
            raise ConfigError(f"{path} is not a tf_lottery ticket file (not an .npz archive)")
        with data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise ConfigError(f"ticket file {path} not found") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        detail = (str(e).splitlines() or [""])[0][:80]
        raise ConfigError(f"{path} is not a tf_lottery ticket file or is damaged "
                          f"({type(e).__name__}: {detail})") from None
    if "header" not in arrays:
        raise ConfigError(f"{path} is not a tf_lottery ticket file (no header)")
    try:
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not a tf_lottery ticket file (unreadable header: "
                          f"{e})") from None
    if header.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a tf_lottery ticket file (format "
                          f"{header.get('format')!r})")
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise ConfigError(f"{path} has ticket format version {header['format_version']}; this "
                          f"tf_lottery {tf_lottery.__version__} reads up to {FORMAT_VERSION}")
    _check_arrays(path, header, arrays)
    return header, arrays


def read_ticket_header(path):
    """The header of the ticket file at `path` (versions, kind 'weak'/'strong', seed,
    masks, metadata...) as a dict; a damaged file is a DataError."""
    return _read(path)[0]


def read_ticket_masks(path):
    """{layer name: 0/1 float32 mask} stored in the ticket file at `path`."""
    header, arrays = _read(path)
    return _unpack_masks(header, arrays)


def _unpack_masks(header, arrays):
    masks = {}
    for index, entry in enumerate(header["masks"]):
        shape = tuple(entry["shape"])
        bits = np.unpackbits(arrays[f"mask_{index}"], count=int(np.prod(shape)))
        masks[entry["layer"]] = bits.reshape(shape).astype(np.float32)
    return masks


def _with_fixed_masks(config):
    """The architecture config with every layer's mask rule replaced by FixedMask."""
    if isinstance(config, dict):
        return {key: (keras.saving.serialize_keras_object(FixedMask()) if key == "mask_rule"
                      else _with_fixed_masks(value)) for key, value in config.items()}
    if isinstance(config, list):
        return [_with_fixed_masks(value) for value in config]
    return config


def load_ticket(path, custom_objects=None):
    """The Keras network of a ticket file: its architecture with FixedMask rules, the stored
    masks, and the stored (weak) or regenerated (strong) weights.

    A strong ticket is regenerated under its seed (keras.utils.set_random_seed) when it has
    one, which resets this process's global random state.

    Args:
      path: the ticket file (save_ticket, export_ticket, a search's workdir/ticket/ticket.npz).
      custom_objects: as for keras.saving: classes of your own layers in the architecture.
    """
    header, arrays = _read(path)
    architecture = header["architecture"]
    values = {}
    if header["kind"] == "strong":
        values = regenerate_weights(architecture, header["seed"], custom_objects)
    stored = [entry for entry in header["weights"] if entry["stored"]]
    for index, entry in enumerate(stored):
        values[entry["key"]] = arrays[f"weight_{index}"]
    network = _build(_with_fixed_masks(architecture), custom_objects)
    for key, variable in ticket_variables(network).items():
        if key not in values:
            raise ConfigError(f"ticket file {path} has no value for variable {key!r}")
        variable.assign(values[key])
    masks_lib.set_masks(network, _unpack_masks(header, arrays))
    return network
