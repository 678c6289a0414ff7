"""tfmot interop: the Keras-neutral graph (always), and tickets to and from tfmot-pruned tf_keras
models (only where the `tfmot` extra is installed; tfmot is never imported in this process)."""
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tf_lottery import masks as masks_lib
from tf_lottery.errors import ConfigError
from tf_lottery.export import load_ticket, read_ticket_masks, save_ticket, to_plain_model
from tf_lottery.interop import keras_graph
from tf_lottery.layers import MaskedConv2D, MaskedDense, MaskedDepthwiseConv2D

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MISSING = [name for name in ("tensorflow_model_optimization", "tf_keras")
           if importlib.util.find_spec(name) is None]
needs_tfmot = pytest.mark.skipif(
    bool(MISSING), reason=f"{' and '.join(MISSING)} not installed (pip install "
                          f"'tf_lottery[tfmot]' in an environment of its own to run these)")


def plain_net():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(x), name="plain")


def masked_net():
    inputs = keras.Input((8, 8, 1))
    x = MaskedConv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = MaskedDepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = MaskedDense(16, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(x), name="ticket")


def _batch():
    return np.random.default_rng(1).normal(size=(4, 8, 8, 1)).astype("float32")


def test_keras_graph_rebuilds_the_same_model(tmp_path):
    model = plain_net()
    bn = model.get_layer("bn")
    bn.set_weights([w + np.random.default_rng(2).random(w.shape).astype("float32")
                    for w in bn.get_weights()])
    keras_graph.save(model, str(tmp_path))
    rebuilt = keras_graph.load(keras, str(tmp_path))
    assert [l.name for l in rebuilt.layers] == [l.name for l in model.layers]
    np.testing.assert_array_equal(rebuilt.predict(_batch(), verbose=0),
                                  model.predict(_batch(), verbose=0))
    sequential = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="d")])
    graph, weights = keras_graph.describe(sequential)
    rebuilt = keras_graph.build(keras, graph, weights)
    np.testing.assert_array_equal(rebuilt(np.ones((1, 5))), sequential(np.ones((1, 5))))


def test_keras_graph_reads_a_keras2_config():
    """What tf_keras writes: batch_input_shape, [[name, node, tensor, kwargs]] nodes, axis as a
    list, DepthwiseConv2D `groups` (which Keras 3 does not take), initialiser dicts."""
    class Keras2Model:
        name = "k2"
        layers = []

        @staticmethod
        def get_config():
            glorot = {"class_name": "GlorotUniform", "config": {"seed": None}}
            return {"name": "k2", "input_layers": [["in", 0, 0]],
                    "output_layers": [["out", 0, 0]], "layers": [
                        {"class_name": "InputLayer", "name": "in", "inbound_nodes": [],
                         "config": {"batch_input_shape": [None, 6, 6, 2], "dtype": "float32",
                                    "sparse": False, "ragged": False, "name": "in"}},
                        {"class_name": "DepthwiseConv2D", "name": "dw",
                         "inbound_nodes": [[["in", 0, 0, {}]]],
                         "config": {"name": "dw", "kernel_size": [3, 3], "groups": 1,
                                    "depthwise_initializer": glorot, "use_bias": False}},
                        {"class_name": "BatchNormalization", "name": "bn",
                         "inbound_nodes": [[["dw", 0, 0, {}]]],
                         "config": {"name": "bn", "axis": [3], "epsilon": 0.01}},
                        {"class_name": "Add", "name": "add",
                         "inbound_nodes": [[["bn", 0, 0, {}], ["bn", 0, 0, {}]]],
                         "config": {"name": "add"}},
                        {"class_name": "Flatten", "name": "flat",
                         "inbound_nodes": [[["add", 0, 0, {}]]], "config": {"name": "flat"}},
                        {"class_name": "Dense", "name": "out",
                         "inbound_nodes": [[["flat", 0, 0, {}]]],
                         "config": {"name": "out", "units": 3, "kernel_initializer": glorot}}]}

    graph, _ = keras_graph.describe(Keras2Model())
    model = keras_graph.build(keras, graph, {})
    assert model.get_layer("bn").axis == 3 and model.get_layer("bn").epsilon == 0.01
    assert model.get_layer("add").input[0] is model.get_layer("add").input[1]
    assert model.output.shape == (None, 3)


def test_keras_graph_refuses_layers_other_keras_versions_do_not_have():
    with pytest.raises(ValueError, match="'conv' \\(MaskedConv2D\\) is not a built-in"):
        keras_graph.describe(masked_net())


def test_without_the_extra_each_function_says_what_to_install(tmp_path, monkeypatch):
    from tf_lottery.interop import tfmot as interop

    monkeypatch.setattr(interop, "REQUIRED", ("no_such_tfmot", "no_such_tf_keras"))
    assert not interop.tfmot_available()
    with pytest.raises(ConfigError, match=r"pip install 'tf_lottery\[tfmot\]'"):
        interop.ticket_to_tfmot(tmp_path / "t.npz", tmp_path / "m.h5")
    with pytest.raises(ConfigError, match="needs no_such_tfmot, no_such_tf_keras"):
        interop.tfmot_to_ticket(tmp_path / "m.h5", tmp_path / "t.npz")


def test_importing_the_module_does_not_import_tfmot():
    code = ("import sys, tf_lottery.interop.tfmot; "
            "print(sorted(m for m in ('tensorflow_model_optimization', 'tf_keras') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT,
                                           "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _inspect_tfmot_model(path):
    """{wrapped layer: [mask shape, kept]} of the prune_low_magnitude wrappers in `path`, read
    by tfmot itself in another process."""
    code = f"""
import json, os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow_model_optimization as tfmot, tf_keras
with tfmot.sparsity.keras.prune_scope():
    model = tf_keras.models.load_model({str(path)!r}, compile=False)
found = {{}}
for layer in model.layers:
    if type(layer).__name__ == "PruneLowMagnitude":
        (weight, mask, _), = layer.pruning_vars
        kept = mask.numpy() != 0
        assert ((weight.numpy() != 0) <= kept).all()  # pruned weights are zero
        found[layer.layer.name] = [list(mask.shape), int(kept.sum())]
print(json.dumps(found))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@needs_tfmot
@pytest.mark.slow
def test_ticket_to_tfmot_and_back(tmp_path):
    network = masked_net()
    rng = np.random.default_rng(3)
    masks = {layer.name: (rng.random(tuple(layer.mask.shape)) < 0.4).astype("float32")
             for layer in masks_lib.masked_layers(network)}
    masks_lib.set_masks(network, masks)
    ticket = save_ticket(network, str(tmp_path / "ticket.npz"))

    from tf_lottery.interop.tfmot import ticket_to_tfmot, tfmot_to_ticket

    written = ticket_to_tfmot(ticket, str(tmp_path / "pruned.h5"))
    pruned = written["path"]
    # tfmot has no pruning for DepthwiseConv2D: that layer is left unwrapped, zeros folded in
    assert written["unwrapped"] == ["depthwise"]
    wrapped = {name: mask for name, mask in masks.items() if name != "depthwise"}
    wrappers = _inspect_tfmot_model(pruned)
    assert wrappers == {name: [list(mask.shape), int(mask.sum())]
                        for name, mask in wrapped.items()}

    back = tfmot_to_ticket(pruned, str(tmp_path / "back.npz"))
    back_masks = read_ticket_masks(back)
    assert set(back_masks) == set(wrapped)
    for name, mask in back_masks.items():
        np.testing.assert_array_equal(mask, masks[name])
    depthwise = load_ticket(back).get_layer("depthwise")
    assert not hasattr(depthwise, "mask")  # a plain layer there ...
    kernel = keras.ops.convert_to_numpy(depthwise.kernel)
    assert (kernel[masks["depthwise"] == 0] == 0).all()  # ... holding the ticket's zeros
    expected = to_plain_model(load_ticket(ticket)).predict(_batch(), verbose=0)
    np.testing.assert_allclose(to_plain_model(load_ticket(back)).predict(_batch(), verbose=0),
                               expected, rtol=1e-5, atol=1e-5)


@needs_tfmot
@pytest.mark.slow
def test_a_bad_tfmot_model_is_one_readable_error(tmp_path):
    from tf_lottery.interop.tfmot import tfmot_to_ticket

    (tmp_path / "not_a_model.h5").write_bytes(b"nothing")
    with pytest.raises(ConfigError, match="^tfmot from_tfmot failed: ") as error:
        tfmot_to_ticket(tmp_path / "not_a_model.h5", tmp_path / "t.npz")
    assert "\n" not in str(error.value)
