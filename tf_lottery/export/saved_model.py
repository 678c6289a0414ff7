"""Ship a ticket: SavedModel, .keras file and TFLite flatbuffer of its plain Keras copy.

Each writer first makes `to_plain_model(model)` (masks folded into kernels, scores and mask
rules dropped, faded ghosts removed), so the artifacts hold only standard Keras layers and TF
ops: loading them needs TensorFlow (and Keras for the .keras file), never tf_lottery.

The folded kernel uses each rule's 0/1 ticket mask. For FixedMask, TopKScores and
BernoulliScores that is what the trained model computes at inference; for SigmoidScores the
trained model multiplies σ(β·s), so the export equals it only once β is large (the end of
continuous sparsification).
"""
import os
import tempfile

from absl import logging

from tf_lottery.errors import ConfigError
from tf_lottery.export.plain import to_plain_model


def export_saved_model(model, path, input_signature=None):
    """Write the ticket as a TF SavedModel (Keras `model.export(format='tf_saved_model')`):
    endpoint `serve` and signature `serving_default`, batch dimension left free.

    Args:
      model: a masked network or a SparseModel (see `to_plain_model`).
      path: the SavedModel directory to write.
      input_signature: optional, as for keras.Model.export (default: the model's inputs).
    Returns: path.
    """
    plain = to_plain_model(model)
    plain.export(os.fspath(path), format="tf_saved_model", verbose=False,
                 input_signature=input_signature)
    return path


def export_keras(model, path):
    """Write the ticket as a .keras file of plain Keras layers (masks folded into the
    kernels): keras.saving.load_model reads it without tf_lottery.

    Args:
      model: a masked network or a SparseModel (see `to_plain_model`).
      path: the file to write; must end in .keras.
    Returns: path.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ConfigError(f"a Keras model file must end in .keras, got {path!r}")
    to_plain_model(model).save(path)
    return path


def export_tflite(model, path):
    """Write the ticket as a TFLite flatbuffer (tf.lite.TFLiteConverter from its SavedModel).

    Args:
      model: a masked network or a SparseModel (see `to_plain_model`).
      path: the .tflite file to write.
    Returns: path, or None (with a logged message) where this TensorFlow has no TFLite converter.
    """
    import tensorflow as tf

    converter_class = getattr(getattr(tf, "lite", None), "TFLiteConverter", None)
    if converter_class is None:
        logging.warning("TFLite export skipped: this TensorFlow build has no tf.lite."
                        "TFLiteConverter (install a TensorFlow with TFLite, or use the SavedModel)")
        return None
    with tempfile.TemporaryDirectory() as saved_model_dir:
        export_saved_model(model, saved_model_dir)
        flatbuffer = converter_class.from_saved_model(saved_model_dir).convert()
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path
