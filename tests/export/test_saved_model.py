import json
import os
import re

import keras
import numpy as np
import pytest

from tf_lottery.errors import ConfigError
from tf_lottery.export import export_keras, export_saved_model, export_tflite
from tf_lottery.layers import TopKScores, masked_layers

from tests.export import nets

# Runs in a fresh interpreter where `import tf_lottery` fails (checked by the prelude).
_LOAD_WITHOUT_TF_LOTTERY = """
import keras
import numpy as np
import tensorflow as tf
import keras

x = np.load("x.npy")
loaded = tf.saved_model.load("saved_model")
serve = loaded.signatures["serving_default"]
(output,) = serve(image=tf.constant(x)).values()
variables = {v.name.split(":")[0]: v.numpy() for v in loaded.variables}
np.savez("from_saved_model.npz", output=output.numpy(), **variables)

plain = keras.saving.load_model("ticket.keras")
np.save("from_keras.npy", plain.predict(x, verbose=0))

interpreter = tf.lite.Interpreter(model_path="ticket.tflite")
runner = interpreter.get_signature_runner("serving_default")  # resizes to the batch
np.save("from_tflite.npy", list(runner(image=x).values())[0])
print("modules:", sorted(m for m in __import__("sys").modules if m.split(".")[0] == "tf_lottery"))
"""


def test_exports_run_without_tf_lottery_and_match_the_trained_ticket(tmp_path):
    network = nets.conv_net(rule=TopKScores(0.5))
    nets.random_masks(network, density=0.6)
    model = nets.train(network)  # a SparseModel: the exports must use model.network
    x, _ = nets.batch(16, seed=7)
    np.save(tmp_path / "x.npy", x)
    expected = np.asarray(model(x, training=False))

    assert export_saved_model(model, tmp_path / "saved_model") == tmp_path / "saved_model"
    export_keras(model, str(tmp_path / "ticket.keras"))
    tflite_path = str(tmp_path / "ticket.tflite")
    assert export_tflite(model, tflite_path) == tflite_path
    out = nets.run_python(_LOAD_WITHOUT_TF_LOTTERY, cwd=tmp_path, without_tf_lottery=True)
    assert "modules: []" in out

    stored = np.load(tmp_path / "from_saved_model.npz")
    np.testing.assert_allclose(stored["output"], expected, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "from_keras.npy"), expected, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "from_tflite.npy"), expected, atol=1e-5)

    names = set(stored.files) - {"output"}
    assert not [n for n in names if any(word in n for word in ("mask", "score", "keep_fraction",
                                                               "ever_selected"))]
    for layer in masked_layers(network):
        mask = layer.binary_mask().numpy()
        kernel = stored[f"{layer.name}/kernel"]
        assert np.all(layer.raw_kernel.numpy() != 0)
        assert np.count_nonzero(kernel == 0) == np.count_nonzero(mask == 0) > 0
        np.testing.assert_array_equal(kernel, layer.raw_kernel.numpy() * mask)


def test_keras_file_name_must_end_in_keras(tmp_path):
    with pytest.raises(ConfigError, match=".keras"):
        export_keras(nets.conv_net(), str(tmp_path / "ticket.h5"))


def test_tflite_is_skipped_with_a_message_without_a_converter(tmp_path, monkeypatch):
    import tensorflow as tf
    from absl import logging

    messages = []
    monkeypatch.setattr(tf, "lite", None)
    monkeypatch.setattr(logging, "warning", lambda msg, *a: messages.append(msg % a if a else msg))
    assert export_tflite(nets.conv_net(), str(tmp_path / "t.tflite")) is None
    assert not os.path.exists(tmp_path / "t.tflite")
    assert "TFLite export skipped" in messages[0]


# -- TFLite: sparse encoding and post-training quantisation --------------------------------------

# Every .tflite file in the folder through TFLite's default interpreter, in a fresh interpreter
# where `import tf_lottery` fails (the shipped files must run with TensorFlow alone): outputs on
# x.npy and the ops each file holds.
_RUN_TFLITE_FILES = """
import glob
import json

import keras
import numpy as np
import tensorflow as tf

x = np.load("x.npy")
outputs, ops = {}, {}
for path in sorted(glob.glob("*.tflite")):
    interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("serving_default")
    outputs[path[:-len(".tflite")]] = list(runner(features=x).values())[0]
    details = getattr(interpreter, "_get_ops_details", lambda: [])()
    ops[path[:-len(".tflite")]] = sorted({op["op_name"] for op in details})
np.savez("outputs.npz", **outputs)
with open("ops.json", "w") as f:
    json.dump(ops, f)
"""


def _features(n, seed):
    return np.random.default_rng(seed).normal(size=(n, 64)).astype("float32")


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory):
    """A 90%-sparse dense net exported six ways, run once in a TFLite interpreter: {'network',
    'expected', 'sizes': {variant: bytes}, 'outputs': {variant: array}, 'ops': {variant: [op]}}."""
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("tflite")
    network = nets.dense_net(density=0.1)
    calibration = _features(256, seed=5)
    as_dataset = tf.data.Dataset.from_tensor_slices((calibration, np.zeros(256))).batch(32)
    variants = {"float": {}, "sparse": {"sparse": True}, "dynamic": {"quantize": "dynamic"},
                "float16": {"quantize": "float16"},
                "int8": {"quantize": "int8", "representative_data": as_dataset},
                "sparse_int8": {"sparse": True, "quantize": "int8",
                                "representative_data": calibration}}
    for name, options in variants.items():
        path = str(folder / f"{name}.tflite")
        assert export_tflite(network, path, **options) == path
    x = _features(64, seed=6)
    np.save(folder / "x.npy", x)
    nets.run_python(_RUN_TFLITE_FILES, cwd=folder, without_tf_lottery=True)
    with open(folder / "ops.json") as f:
        ops = json.load(f)
    outputs = dict(np.load(folder / "outputs.npz"))
    return {"network": network, "expected": np.asarray(network(x)), "outputs": outputs,
            "ops": ops, "folder": folder,
            "sizes": {name: os.path.getsize(folder / f"{name}.tflite") for name in variants}}


def test_sparse_tflite_matches_the_ticket_and_is_smaller(tflite_files):
    expected, outputs, sizes = (tflite_files[k] for k in ("expected", "outputs", "sizes"))
    np.testing.assert_allclose(outputs["float"], expected, atol=1e-5)
    np.testing.assert_allclose(outputs["sparse"], expected, atol=1e-5)
    # TFLite's sparse encoding holds the 10% kept weights (values + indices) instead of all:
    # measured 11.2 kB vs 69.9 kB on TF 2.21; densified once at load (a DENSIFY op)
    assert sizes["sparse"] < 0.4 * sizes["float"], sizes
    assert "DENSIFY" in tflite_files["ops"]["sparse"] or not tflite_files["ops"]["sparse"]
    assert "DENSIFY" not in tflite_files["ops"]["float"]


def test_quantized_tflite_is_close_to_the_ticket_and_smaller(tflite_files):
    expected, outputs, sizes = (tflite_files[k] for k in ("expected", "outputs", "sizes"))
    scale = np.abs(expected).max()
    for name, tolerance in (("float16", 1e-3), ("dynamic", 0.03), ("int8", 0.05),
                            ("sparse_int8", 0.05)):
        error = np.abs(outputs[name] - expected).max() / scale
        assert error < tolerance, (name, error)
        agreement = np.mean(outputs[name].argmax(-1) == expected.argmax(-1))
        assert agreement >= 0.9, (name, agreement)
    # 1 byte per weight instead of 4 (biases stay 32-bit, plus the flatbuffer's own overhead)
    assert sizes["int8"] < sizes["float"] / 3, sizes
    assert sizes["dynamic"] < sizes["float"] / 2.5, sizes
    assert sizes["float16"] < 0.6 * sizes["float"], sizes
    assert sizes["sparse_int8"] < 0.6 * sizes["int8"], sizes
    # int8 kernels inside, float32 input and output (QUANTIZE / DEQUANTIZE at the ends)
    if tflite_files["ops"]["int8"]:
        assert {"QUANTIZE", "DEQUANTIZE"} <= set(tflite_files["ops"]["int8"])


@pytest.mark.parametrize("options, message", [
    ({"quantize": "int4"}, "unknown quantize='int4'; choose one of None, 'dynamic', 'float16', "
                           "'int8'"),
    ({"quantize": True}, "unknown quantize=True"),
    ({"quantize": "int8"}, "needs representative_data"),
    ({"quantize": "float16", "representative_data": np.zeros((4, 64))},
     "used only by quantize='int8'"),
    ({"sparse": "yes"}, "sparse must be True or False"),
    ({"sparse": True, "quantize": "dynamic"}, "default interpreter cannot run"),
    ({"quantize": "int8", "representative_data": 3}, "got int"),
])
def test_tflite_options_are_checked_before_anything_is_built(tmp_path, options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        export_tflite(None, str(tmp_path / "t.tflite"), **options)  # never reaches the model
    assert os.listdir(tmp_path) == []


class _Erf(keras.layers.Layer):
    """erf: a TensorFlow op that TFLite's builtin op set lacks."""

    def call(self, x):
        return keras.ops.erf(x)


def test_tflite_failures_are_one_readable_error_and_leave_no_file(tmp_path):
    path = tmp_path / "t.tflite"
    path.write_bytes(b"the previous export")
    network = nets.dense_net()
    bad_data = [
        ([], "representative_data yielded no batch"),
        ([np.zeros((2, 8), "float32")], "a representative_data batch of shape (2, 8) does not fit "
                                        "the input 'features' of shape (None, 64)"),
        ([{"image": np.zeros((2, 64))}], "lacks the model's inputs ['features']"),
    ]
    for data, message in bad_data:
        with pytest.raises(ConfigError, match=re.escape(message)):
            export_tflite(network, str(path), quantize="int8", representative_data=data)
    inputs = keras.Input((4,), name="features")
    with_erf = keras.Model(inputs, keras.layers.Dense(2)(_Erf()(inputs)))
    with pytest.raises(ConfigError) as error:
        export_tflite(with_erf, str(path))
    assert str(error.value).splitlines() == [
        "TFLite conversion failed (sparse=False, quantize=None): 'tf.Erf' op is neither a custom "
        "op nor a flex op (TensorFlow ops TFLite's builtins lack: Erf)"]
    assert os.listdir(tmp_path) == ["t.tflite"]  # no temporary left,
    assert path.read_bytes() == b"the previous export"  # and the old file untouched


def test_int8_calibration_data_of_a_model_with_two_inputs(tmp_path):
    import tensorflow as tf

    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    joined = keras.layers.Concatenate()([a, keras.layers.Dense(4, name="fc_b")(b)])
    model = keras.Model([a, b], keras.layers.Dense(2, name="out")(joined))
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 3)).astype("float32")
    with pytest.raises(ConfigError, match=re.escape("must be a list of 2 arrays or a dict")):
        export_tflite(model, str(tmp_path / "t.tflite"), quantize="int8",
                      representative_data=[xa])
    # examples by input name; fed to the converter by name, never in a guessed order (with the
    # arrays swapped the calibration would fail on the shapes)
    export_tflite(model, str(tmp_path / "t.tflite"), quantize="int8",
                  representative_data={"b": xb, "a": xa})
    runner = tf.lite.Interpreter(str(tmp_path / "t.tflite")).get_signature_runner()
    expected = np.asarray(model([xa, xb]))
    error = np.abs(list(runner(a=xa, b=xb).values())[0] - expected).max()
    assert error < 0.05 * np.abs(expected).max()
