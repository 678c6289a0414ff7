"""A Keras model as plain data (JSON + arrays) that both Keras 3 and Keras 2 (tf_keras) rebuild.

Neither Keras reads the other's model configs: Keras 3 writes `batch_shape`, dtype policies and
`module` keys that tf_keras rejects, and tf_keras writes arguments Keras 3 dropped (`groups` of
DepthwiseConv2D). So a model crosses over as a graph of built-in layers: for each layer its
class name, the constructor arguments that are plain values, the layers whose outputs it is
called on, and its weights. Initialisers, regularisers and constraints are left out (the
weights are given); each side keeps only the arguments its own layer class takes.

Supported: functional and sequential models of `keras.layers` classes, each layer called once.
This module imports no Keras: the functions that build take the `keras` module to build with.
"""
import inspect
import json
import os

import numpy as np

GRAPH_FILE = "graph.json"
WEIGHTS_FILE = "weights.npz"
_BASE_ARGUMENTS = {"name", "dtype", "trainable"}


def _plain_value(value):
    return value is None or isinstance(value, (bool, int, float, str)) or (
        isinstance(value, (list, tuple)) and all(_plain_value(v) for v in value))


def _neutral_config(config):
    """The layer config without nested objects; a dtype policy becomes its name."""
    out = {}
    for key, value in config.items():
        if key == "dtype" and isinstance(value, dict):
            value = value.get("config", {}).get("name", "float32")
        if key == "axis" and isinstance(value, (list, tuple)) and len(value) == 1:
            value = value[0]  # tf_keras normalisation layers write [axis]; Keras 3 takes an int
        if _plain_value(value):
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _tensor_refs(arguments):
    """[layer name, node index, tensor index] of every Keras tensor a layer is called on, from
    a Keras 3 node ({'args': ..., 'kwargs': ...}) or a Keras 2 node ([[name, n, t, kw], ...])."""
    if isinstance(arguments, dict):
        if arguments.get("class_name") == "__keras_tensor__":
            return [list(arguments["config"]["keras_history"][:3])]
        return [ref for value in arguments.values() for ref in _tensor_refs(value)]
    if isinstance(arguments, (list, tuple)):
        if (len(arguments) == 4 and isinstance(arguments[0], str)
                and isinstance(arguments[1], int) and isinstance(arguments[3], dict)):
            return [list(arguments[:3])]
        return [ref for value in arguments for ref in _tensor_refs(value)]
    return []


def _refs(entries):
    """Keras 2/3 `input_layers`/`output_layers`: one [name, n, t] or a list of them."""
    if entries and isinstance(entries[0], str):
        return [list(entries[:3])]
    return [list(entry[:3]) for entry in entries]


def describe(model):
    """(graph, weights) of a built functional or sequential model of either Keras."""
    config = model.get_config()
    layers, previous = [], None
    for entry in config["layers"]:
        class_name, layer_config = entry["class_name"], entry["config"]
        if entry.get("module") not in (None, "keras.layers") or "layers" in layer_config:
            raise ValueError(f"layer {layer_config.get('name')!r} ({class_name}) is not a "
                             f"built-in Keras layer: it cannot cross between Keras versions")
        name = layer_config["name"]
        if class_name == "InputLayer":
            shape = layer_config.get("batch_shape") or layer_config.get("batch_input_shape")
            layers.append({"name": name, "class_name": "InputLayer", "shape": list(shape[1:]),
                           "dtype": _neutral_config(layer_config).get("dtype", "float32")})
            previous = name
            continue
        nodes = entry.get("inbound_nodes")
        if nodes is None:  # sequential: called on the previous layer
            if previous is None:
                raise ValueError("a sequential model needs an input shape (build it first)")
            inbound = [[previous, 0, 0]]
        elif len(nodes) != 1:
            raise ValueError(f"layer {name!r} is called {len(nodes)} times; shared layers are "
                             f"not supported")
        else:
            inbound = _tensor_refs(nodes[0])
        layers.append({"name": name, "class_name": class_name,
                       "config": _neutral_config(layer_config), "inbound": inbound})
        previous = name
    if "input_layers" in config:
        inputs, outputs = _refs(config["input_layers"]), _refs(config["output_layers"])
    else:
        inputs, outputs = [[layers[0]["name"], 0, 0]], [[previous, 0, 0]]
    weights = {f"{layer.name}/{index}": np.asarray(value)
               for layer in model.layers for index, value in enumerate(layer.get_weights())}
    graph = {"name": config.get("name", model.name), "layers": layers, "inputs": inputs,
             "outputs": outputs}
    return graph, weights


def save(model, directory):
    """Write `model` as directory/graph.json and directory/weights.npz."""
    graph, weights = describe(model)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, GRAPH_FILE), "w") as f:
        json.dump(graph, f)
    np.savez(os.path.join(directory, WEIGHTS_FILE), **weights)


def _constructor_arguments(cls):
    parameters = inspect.signature(cls.__init__).parameters
    return {name for name, p in parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}


def build(keras, graph, weights):
    """The model of `graph` built with the Keras module `keras` (keras or tf_keras), with the
    weights {'<layer>/<index>': array} of `describe`."""
    tensors, layers = {}, {}
    for spec in graph["layers"]:
        name = spec["name"]
        if spec["class_name"] == "InputLayer":
            tensors[(name, 0, 0)] = keras.Input(shape=tuple(spec["shape"]), dtype=spec["dtype"],
                                                name=name)
            continue
        cls = getattr(keras.layers, spec["class_name"], None)
        if cls is None:
            raise ValueError(f"{keras.__name__} has no layer class {spec['class_name']!r}")
        accepted = _constructor_arguments(cls) | _BASE_ARGUMENTS
        layer = cls(**{k: v for k, v in spec["config"].items() if k in accepted})
        arguments = [tensors[tuple(ref)] for ref in spec["inbound"]]
        output = layer(arguments[0] if len(arguments) == 1 else arguments)
        for index, tensor in enumerate(output if isinstance(output, (list, tuple)) else [output]):
            tensors[(name, 0, index)] = tensor
        layers[name] = layer
    inputs = [tensors[tuple(ref)] for ref in graph["inputs"]]
    outputs = [tensors[tuple(ref)] for ref in graph["outputs"]]
    model = keras.Model(inputs[0] if len(inputs) == 1 else inputs,
                        outputs[0] if len(outputs) == 1 else outputs, name=graph["name"])
    for name, layer in layers.items():  # a layer without weights in `weights` keeps its own
        keys = [f"{name}/{index}" for index in range(len(layer.weights))]
        if keys and keys[0] in weights:
            layer.set_weights([weights[key] for key in keys])
    return model


def load(keras, directory):
    """The model saved in `directory` by `save`, built with the Keras module `keras`."""
    with open(os.path.join(directory, GRAPH_FILE)) as f:
        graph = json.load(f)
    with np.load(os.path.join(directory, WEIGHTS_FILE)) as data:
        weights = {key: data[key] for key in data.files}
    return build(keras, graph, weights)
