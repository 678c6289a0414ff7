import os

import numpy as np
import pytest

from tf_lottery.errors import ConfigError
from tf_lottery.export import export_keras, export_saved_model, export_tflite
from tf_lottery.layers import TopKScores, masked_layers

from tests.export import nets

# Runs in a fresh interpreter where `import tf_lottery` fails (checked by the prelude).
_LOAD_WITHOUT_TF_LOTTERY = """
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
