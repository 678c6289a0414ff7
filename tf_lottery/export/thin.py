"""Thinning export: a plain Keras model in which pruned channels are physically gone.

`thin(model)` folds the masks (`to_plain_model`), finds the channel groups
(sparsity.channel_graph) and removes every channel c of a group whose weights in every consumer
are zero: nothing downstream reads c, so cutting it out is exact whatever c's value (bias,
BatchNorm β). Producers get fewer filters/units, consumers fewer input rows, BatchNorm and
depthwise layers lose the channel's entries; layers keep their names, so the thinned model's
`flops` equals the masked model's for the kernels it keeps. Channel pruning
(sparsity.channels) leaves exactly such channels; unstructured masks rarely do.
"""
import keras
import numpy as np

from tf_lottery.errors import ConfigError
from tf_lottery.export.plain import network_of, to_plain_model
from tf_lottery.sparsity.channel_graph import channel_groups

_SIZE_ARGUMENT = ("filters", "units")


def _zero_rows(kernel, consumer, channels):
    """Bool per channel: are all the consumer's rows for it zero?"""
    rows = consumer.rows(channels).reshape(consumer.repeat, len(channels))
    values = np.moveaxis(kernel, consumer.axis, 0)
    flat = values.reshape(values.shape[0], -1)
    return ~np.any(flat[rows] != 0, axis=(0, 2))


def removable_channels(plain, groups):
    """{group name: sorted int array of removable channels} (each group keeps at least one)."""
    removable = {}
    for group in groups:
        if not group.prunable:
            continue
        channels = np.arange(group.size)
        unread = np.ones(group.size, bool)
        for consumer in group.consumers:
            kernel = keras.ops.convert_to_numpy(consumer.layer.kernel)
            unread &= _zero_rows(kernel, consumer, channels)
        if unread.all():
            unread[0] = False  # a layer cannot have zero channels: keep the first
        if unread.any():
            removable[group.name] = channels[unread]
    return removable


def _cuts(groups, removable):
    """{(layer name, weight name, axis): set of removed indices} and {producer: removed}."""
    cuts, sizes = {}, {}

    def cut(layer, weight, axis, indices):
        rank = len(next(w for w in layer.weights if _short(w) == weight).shape)
        cuts.setdefault((layer.name, weight, axis % rank), set()).update(int(i) for i in indices)

    for group in groups:
        removed = removable.get(group.name)
        if removed is None:
            continue
        for layer, axis in group.producers:
            cut(layer, "kernel", axis, removed)
            if getattr(layer, "use_bias", False):
                cut(layer, "bias", 0, removed)
            sizes[layer.name] = sizes.get(layer.name, 0) + len(removed)
        for consumer in group.consumers:
            cut(consumer.layer, "kernel", consumer.axis, consumer.rows(removed))
        for layer in group.channel_layers:
            for weight in layer.weights:
                axis = -2 if _short(weight) == "kernel" else 0
                cut(layer, _short(weight), axis, removed)
    return cuts, sizes


def _short(variable):
    return variable.path.rsplit("/", 1)[-1]


def _thin_config(plain, sizes):
    config = plain.get_config()
    for entry in config["layers"]:
        entry.pop("build_config", None) if entry.get("class_name") != "InputLayer" else None
        layer_config = entry["config"]
        removed = sizes.get(layer_config.get("name"))
        if removed:
            key = next(k for k in _SIZE_ARGUMENT if k in layer_config)
            layer_config[key] -= removed
    return config


def thin(model):
    """A plain Keras model with every pruned channel cut out (module docstring); its outputs
    equal the masked model's to float tolerance.

    Args:
      model: a functional or Sequential masked network (or a SparseModel, or a plain model whose
        kernels hold zeros) without nested models.
    Returns: the thinned keras.Model (same class of graph, same layer names).
    Raises:
      ConfigError: no channel can be removed (no channel masks), or a model `to_plain_model`
        cannot copy.
    """
    plain = to_plain_model(network_of(model))
    if any(isinstance(layer, keras.Model) for layer in plain.layers):
        raise ConfigError("thin does not handle nested models: build the network as one "
                          "functional graph")
    groups = channel_groups(plain)
    removable = removable_channels(plain, groups)
    if not removable:
        blocked = "; ".join(f"{g.name}: {g.reason}" for g in groups if not g.prunable)
        raise ConfigError("nothing to thin: no channel of the model is pruned in every layer "
                          "that reads it (prune channels first, sparsity.channels; unstructured "
                          "or N:M masks do not remove channels)"
                          + (f"; groups that cannot be thinned: {blocked}" if blocked else ""))
    cuts, sizes = _cuts(groups, removable)
    thinned = plain.__class__.from_config(_thin_config(plain, sizes))
    for layer in plain.layers:
        if not layer.weights:
            continue
        values = []
        for variable in layer.weights:
            value = keras.ops.convert_to_numpy(variable)
            for axis in range(value.ndim):
                removed = cuts.get((layer.name, _short(variable), axis))
                if removed:
                    value = np.delete(value, sorted(removed), axis=axis)
            values.append(value)
        thinned.get_layer(layer.name).set_weights(values)
    return thinned
