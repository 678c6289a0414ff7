"""Which output channels of a Keras graph are tied together: the groups channel pruning removes
as one, and `export.thin` cuts out.

A *channel group* is a set of channels that must be removed together, with every kernel that
reads or writes them:

* producers: Conv1D/2D/3D (groups=1) and Dense write the group (kernel axis -1), transposed
  convolutions too (kernel axis -2);
* consumers: the same layers read it (kernel axis -2; -1 for transposed convolutions), at an
  offset where a Concatenate put the group after other channels, and once per position where a
  Flatten spread it (row p·C + offset + c);
* channel layers: BatchNormalization (γ, β, moving statistics) and DepthwiseConv (multiplier 1)
  hold one entry per channel and pass the group through;
* element-wise layers (activations, dropout, pooling, padding, cropping, up-sampling) pass it
  through; Add, Subtract, Multiply, Average, Maximum, Minimum tie their inputs into one group
  (a residual stream is one group from the stem to the classifier).

Removing channel c is exact when every consumer's weights on c are zero: nothing downstream then
depends on c, whatever its value (a bias, BatchNorm's β). So channel pruning masks the
producers' filters *and* the consumers' input rows, and a group is prunable only when its
producers may be pruned, every kernel reading it is masked, and nothing else reads it: the model's
outputs, a softmax over channels, and any layer not listed above (LayerNormalization, Reshape,
attention, a nested model, a layer called twice) make the groups they touch unprunable.
"""
import dataclasses

import keras
import numpy as np

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.interop.keras_graph import _tensor_refs

_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
               keras.layers.Conv3DTranspose)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_MERGES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
           keras.layers.Average, keras.layers.Maximum, keras.layers.Minimum)
_ELEMENTWISE = tuple(getattr(keras.layers, name) for name in (
    "Activation", "ReLU", "LeakyReLU", "ELU", "Identity", "ActivityRegularization",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
    "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D") if hasattr(keras.layers, name))
_CHANNEL_MIXING = ("softmax", "log_softmax")


@dataclasses.dataclass
class Consumer:
    """A kernel reading a group: rows offset + c (+ p·stride for each of `repeat` positions)
    along its input `axis`."""
    layer: keras.layers.Layer
    axis: int
    offset: int = 0
    stride: int = 0
    repeat: int = 1

    def rows(self, channels):
        """The kernel rows along `axis` that channels (an int array) occupy."""
        channels = np.asarray(channels, dtype=np.int64)
        return (np.arange(self.repeat)[:, None] * self.stride + self.offset
                + channels[None, :]).reshape(-1)


@dataclasses.dataclass
class ChannelGroup:
    """Channels removed together (module docstring). `name` is its first producer's name."""
    name: str
    size: int
    producers: list  # [(layer, kernel output axis)]
    consumers: list  # [Consumer]
    channel_layers: list  # BatchNormalization and DepthwiseConv layers the group passes through
    prunable: bool
    reason: str = ""  # why not prunable

    @property
    def norms(self):
        return [layer for layer in self.channel_layers
                if isinstance(layer, keras.layers.BatchNormalization)]

    def kernel_layers(self):
        """Every layer whose kernel the group's channels touch."""
        layers = [layer for layer, _ in self.producers] + [c.layer for c in self.consumers]
        layers += [layer for layer in self.channel_layers if isinstance(layer, _DEPTHWISE)]
        unique = {id(layer): layer for layer in layers}
        return list(unique.values())


class _Space:
    def __init__(self, size):
        self.size, self.parent = size, self
        self.producers, self.consumers, self.channel_layers = [], [], []
        self.reasons = []

    def root(self):
        space = self
        while space.parent is not space:
            space.parent = space.parent.parent
            space = space.parent
        return space


def _union(a, b):
    a, b = a.root(), b.root()
    if a is b:
        return
    if a.size != b.size:  # cannot happen in a graph Keras built; be safe
        a.reasons.append("channel counts differ across a merge")
    b.parent = a
    for name in ("producers", "consumers", "channel_layers", "reasons"):
        getattr(a, name).extend(getattr(b, name))


class _Layout:
    """The channels of one tensor: segments [(space, length)] along the last axis, each
    repeated at `repeat` positions (a Flatten's)."""

    def __init__(self, segments, repeat=1):
        self.segments, self.repeat = segments, repeat

    @property
    def channels(self):
        return sum(length for _, length in self.segments)

    def block(self, reason):
        for space, _ in self.segments:
            space.root().reasons.append(reason)


def _new_layout(size, reason=None):
    space = _Space(size)
    if reason:
        space.reasons.append(reason)
    return _Layout([(space, size)])


def _last_dim(tensor):
    shape = tuple(tensor.shape)
    return int(shape[-1]) if shape and shape[-1] is not None else 0


def _channel_mixing(layer):
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") in _CHANNEL_MIXING


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _call_graph(network):
    """[(layer, [input refs], [output refs])] in call order and the model's output refs, from
    the model's config (a ref is (layer name, node index, tensor index))."""
    config = network.get_config()
    if isinstance(network, keras.Sequential):
        calls, previous = [], None
        for layer in network.layers:
            inputs = [] if previous is None else [(previous, 0, 0)]
            if previous is None:
                calls.append((None, [], [("__input__", 0, 0)]))
                inputs = [("__input__", 0, 0)]
            calls.append((layer, inputs, [(layer.name, 0, 0)]))
            previous = layer.name
        return calls, [(previous, 0, 0)]
    calls = []
    for entry in config["layers"]:
        name = entry["config"]["name"] if "name" not in entry else entry["name"]
        layer = network.get_layer(name)
        nodes = entry.get("inbound_nodes") or []
        if isinstance(layer, keras.layers.InputLayer):
            calls.append((None, [], [(name, 0, 0)]))
            continue
        if len(nodes) > 1:  # a shared layer: its outputs are (name, node, 0)
            refs = [tuple(ref) for node in nodes for ref in _tensor_refs(node)]
            calls.append((layer, refs, [(name, node, 0) for node in range(len(nodes))]))
            continue
        refs = [tuple(ref) for ref in _tensor_refs(nodes[0])] if nodes else []
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        calls.append((layer, refs, [(name, 0, index) for index in range(len(outputs))]))
    outputs = config["output_layers"]
    outputs = [outputs] if outputs and isinstance(outputs[0], str) else outputs
    return calls, [tuple(ref[:3]) for ref in outputs]


def _propagate(layer, inputs, outputs):
    """The layouts of `layer`'s outputs from its input layouts, recording roles."""
    name = layer.name
    if isinstance(layer, keras.Model):
        reason = f"{name} is a nested model"
    elif isinstance(layer, _CONVS + (keras.layers.Dense,) + _TRANSPOSED):
        reason = f"{name} is called on {len(inputs)} tensors"
        if isinstance(layer, _CONVS) and getattr(layer, "groups", 1) != 1:
            reason = f"{name} is a grouped convolution"
        elif not _channels_last(layer):
            reason = f"{name} is channels_first"
        elif len(inputs) == 1:
            (layout,) = inputs
            transposed = isinstance(layer, _TRANSPOSED)
            in_axis, out_axis = (-1, -2) if transposed else (-2, -1)
            offset = 0
            if layout.repeat > 1 and not isinstance(layer, keras.layers.Dense):
                layout.block(f"{name} reads a flattened tensor")
            for space, length in layout.segments:
                space.root().consumers.append(Consumer(layer, in_axis, offset, layout.channels,
                                                       layout.repeat))
                offset += length
            out = _new_layout(_last_dim(outputs[0]),
                              f"{name} applies a softmax across its outputs"
                              if _channel_mixing(layer) else None)
            out.segments[0][0].producers.append((layer, out_axis))
            return [out]
    elif isinstance(layer, keras.layers.BatchNormalization) or (
            isinstance(layer, _DEPTHWISE) and layer.depth_multiplier == 1):
        (layout,) = inputs
        axis = getattr(layer, "axis", -1)
        rank = len(outputs[0].shape)
        if (axis in (-1, rank - 1) and _channels_last(layer) and layout.repeat == 1
                and not _channel_mixing(layer)):
            for space, _ in layout.segments:
                space.root().channel_layers.append(layer)
            return [layout]
        reason = f"{name} does not keep channels on the last axis"
    elif isinstance(layer, _ELEMENTWISE):
        if not _channel_mixing(layer) and _channels_last(layer):
            return [inputs[0]]
        reason = f"{name} mixes channels (softmax or channels_first)"
    elif isinstance(layer, _MERGES) and inputs:
        lengths = [[length for _, length in layout.segments] for layout in inputs]
        if all(lengths[0] == other for other in lengths[1:]) and len(
                {layout.repeat for layout in inputs}) == 1:
            for other in inputs[1:]:
                for (a, _), (b, _) in zip(inputs[0].segments, other.segments):
                    _union(a, b)
            return [inputs[0]]
        reason = f"{name} merges tensors whose channel groups do not line up"
    elif isinstance(layer, keras.layers.Concatenate) and inputs:
        rank = len(outputs[0].shape)
        if layer.axis in (-1, rank - 1) and len({layout.repeat for layout in inputs}) == 1:
            return [_Layout([s for layout in inputs for s in layout.segments], inputs[0].repeat)]
        reason = f"{name} concatenates along another axis than channels"
    elif isinstance(layer, keras.layers.Flatten) and len(inputs) == 1:
        (layout,) = inputs
        shape = tuple(layer.input.shape)
        if _channels_last(layer) and len(shape) >= 2 and None not in shape[1:-1]:
            return [_Layout(layout.segments, layout.repeat * int(np.prod(shape[1:-1])))]
        reason = f"{name} flattens an input of unknown size or channels_first"
    else:
        reason = f"{name} ({type(layer).__name__}) is not a layer channel pruning understands"
    for layout in inputs:
        layout.block(reason)
    return [_new_layout(_last_dim(tensor), reason) for tensor in outputs]


def _check_roles(group, prunable_names):
    """Why `group` cannot be pruned when only `prunable_names` may lose output channels."""
    for layer, _ in group.producers:
        if layer.name not in prunable_names:
            return f"{layer.name} writes these channels and is not pruned (excluded or unmasked)"
    for layer in group.kernel_layers():
        if not hasattr(layer, "mask"):
            return f"{layer.name} reads these channels and has no mask"
    return ""


def channel_groups(model, prunable=None):
    """The channel groups of a functional or Sequential Keras model (module docstring).

    Args:
      model: a built functional or Sequential model, masked or plain (or a SparseModel).
      prunable: names of the layers whose output channels may be removed (a search's prunable
        layers); a group is then prunable only if all its producers are among them and every
        kernel reading it is masked (an excluded layer still loses the input rows of channels
        removed upstream). None: no such check (a plain model to thin).
    Returns: [ChannelGroup] in the order of their first producer, prunable or not.
    """
    from tf_lottery.export.plain import network_of

    network = network_of(model)
    if not compat.is_graph_model(network):
        raise ConfigError(f"channel groups need a functional or Sequential Keras model, got "
                          f"{type(network).__name__} (a subclassed model has no graph to read)")
    if not network.built:
        raise ConfigError(f"model {network.name!r} is not built: give it an input shape first")
    calls, model_outputs = _call_graph(network)
    layouts = {}
    for layer, inputs, outputs in calls:
        if layer is None:  # an input
            (ref,) = outputs
            shape = (network.layers[0].input.shape if ref[0] == "__input__"
                     else network.get_layer(ref[0]).output.shape)
            layouts[ref] = _new_layout(int(shape[-1] or 0), "the model's input")
            continue
        in_layouts = [layouts[ref] for ref in inputs if ref in layouts]
        if len(outputs) > 1 and outputs[1][1] == 1:  # a shared layer
            reason = f"{layer.name} is called more than once"
            for layout in in_layouts:
                layout.block(reason)
            layouts.update({ref: _new_layout(0, reason) for ref in outputs})
            continue
        tensors = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        for ref, layout in zip(outputs, _propagate(layer, in_layouts, tensors)):
            layouts[ref] = layout
    for ref in model_outputs:
        layouts[ref].block("it reaches the model's output")
    order = {layer.name: index for index, (layer, _, _) in enumerate(calls) if layer is not None}
    roots = {}
    for layout in layouts.values():
        for space, _ in layout.segments:
            root = space.root()
            roots[id(root)] = root
    groups = []
    for root in roots.values():
        if not root.producers:
            continue
        producers = sorted({id(layer): (layer, axis) for layer, axis in root.producers}
                           .values(), key=lambda entry: order[entry[0].name])
        group = ChannelGroup(name=producers[0][0].name, size=root.size, producers=producers,
                             consumers=root.consumers,
                             channel_layers=list({id(l): l for l in root.channel_layers}
                                                 .values()),
                             prunable=False)
        reason = root.reasons[0] if root.reasons else ""
        if not reason and not group.consumers:
            reason = "no layer reads it"
        if not reason and prunable is not None:
            reason = _check_roles(group, set(prunable))
        group.prunable, group.reason = not reason, reason
        groups.append(group)
    return sorted(groups, key=lambda g: order[g.name])
