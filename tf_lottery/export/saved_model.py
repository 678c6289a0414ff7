"""Ship a ticket: SavedModel, .keras file and TFLite flatbuffer (optionally with TFLite's sparse
weight encoding and post-training quantisation) of its plain Keras copy.

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

import numpy as np
from absl import logging

from tf_lottery import workdir as workdir_lib
from tf_lottery.errors import ConfigError, TfLotteryError
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
    _write_saved_model(to_plain_model(model), path, input_signature)
    return path


def _write_saved_model(plain, path, input_signature=None):
    plain.export(os.fspath(path), format="tf_saved_model", verbose=False,
                 input_signature=input_signature)


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


QUANTIZE_CHOICES = (None, "dynamic", "float16", "int8")
REPRESENTATIVE_BATCH = 32  # examples per calibration batch when representative_data is an array


def _check_tflite_options(sparse, quantize, representative_data):
    """Raise ConfigError for an invalid combination of export_tflite's options."""
    if not isinstance(sparse, (bool, np.bool_)):
        raise ConfigError(f"export_tflite: sparse must be True or False, got {sparse!r}")
    if not (quantize is None or isinstance(quantize, str) and quantize in QUANTIZE_CHOICES):
        raise ConfigError(f"export_tflite: unknown quantize={quantize!r}; choose one of "
                          f"{', '.join(map(repr, QUANTIZE_CHOICES))}")
    if quantize == "int8" and representative_data is None:
        raise ConfigError("export_tflite: quantize='int8' (full integer quantisation) needs "
                          "representative_data, a few hundred input examples to calibrate the "
                          "activation ranges with")
    if quantize != "int8" and representative_data is not None:
        raise ConfigError(f"export_tflite: representative_data is used only by "
                          f"quantize='int8', not quantize={quantize!r}")
    if sparse and quantize == "dynamic":
        raise ConfigError("export_tflite: sparse=True with quantize='dynamic' writes a file "
                          "TFLite's default interpreter cannot run (its XNNPACK delegate fails "
                          "to prepare a dynamic-range FULLY_CONNECTED with sparse weights); "
                          "use sparse=True with quantize=None, 'float16' or 'int8'")
    if representative_data is not None and (
            isinstance(representative_data, (str, bytes))
            or not hasattr(representative_data, "__iter__")):
        raise ConfigError(f"export_tflite: representative_data must be an array of input "
                          f"examples (a dict of them by input name), an iterable of input "
                          f"batches or a tf.data.Dataset, got "
                          f"{type(representative_data).__name__}")


def _representative_dataset(data, inputs):
    """The converter's representative_dataset: a function yielding {signature input name:
    batch} for each batch of `data` (see export_tflite); ConfigError when it yields none."""
    import tensorflow as tf

    names = [tensor.name for tensor in inputs]
    dtypes = [_input_dtype(tensor) for tensor in inputs]
    shapes = [tuple(tensor.shape) for tensor in inputs]

    def batches():
        if isinstance(data, tf.data.Dataset):  # Keras' convention: (x, y[, sample_weight]) or x
            for element in data:
                yield element[0] if isinstance(element, tuple) else element
        elif isinstance(data, (np.ndarray, tf.Tensor)):
            for start in range(0, len(data), REPRESENTATIVE_BATCH):
                yield data[start:start + REPRESENTATIVE_BATCH]
        elif isinstance(data, dict):  # examples by input name
            count = min((len(value) for value in data.values()), default=0)
            for start in range(0, count, REPRESENTATIVE_BATCH):
                yield {name: value[start:start + REPRESENTATIVE_BATCH]
                       for name, value in data.items()}
        else:
            yield from data

    def as_feed(batch):
        if isinstance(batch, dict):
            missing = [name for name in names if name not in batch]
            if missing:
                raise ConfigError(f"export_tflite: a representative_data batch lacks the "
                                  f"model's inputs {missing} (it has {sorted(batch)})")
            values = [batch[name] for name in names]
        elif len(names) > 1:
            if not isinstance(batch, (list, tuple)) or len(batch) != len(names):
                raise ConfigError(f"export_tflite: the model has {len(names)} inputs "
                                  f"{names}: each representative_data batch must be a list of "
                                  f"{len(names)} arrays or a dict by input name")
            values = list(batch)
        else:
            values = [batch]
        feed = {}
        for name, value, dtype, shape in zip(names, values, dtypes, shapes):
            value = np.asarray(value, dtype=dtype)
            if value.ndim != len(shape) or any(
                    want is not None and have != want for have, want in zip(value.shape[1:],
                                                                            shape[1:])):
                raise ConfigError(f"export_tflite: a representative_data batch of shape "
                                  f"{value.shape} does not fit the input {name!r} of shape "
                                  f"{tuple(shape)} (batches, not single examples)")
            feed[name] = value
        return feed

    def generate():
        count = 0
        for batch in batches():
            count += 1
            yield as_feed(batch)
        if not count:
            raise ConfigError("export_tflite: representative_data yielded no batch")

    return generate


def _input_dtype(tensor):
    """The numpy dtype of a Keras input tensor (float32 when it has none)."""
    return np.dtype(getattr(tensor, "dtype", None) or "float32")


def _configure(converter, sparse, quantize):
    import tensorflow as tf

    optimizations = []
    if quantize is not None:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":  # int8 kernels only; input and output stay float32
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]


def _without_location(text):
    """MLIR's message without the `loc(...)`: that starts it."""
    if not text.startswith("loc("):
        return text
    depth = 0
    for index, char in enumerate(text[3:], start=3):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return text[index + 1:].lstrip(": ").strip() or text
    return text


def _conversion_cause(error):
    """What a converter error says went wrong, in one short line: the converter's first error
    message (from its structured errors, else MLIR's first 'error:' line without its source
    location, else the first line), and the TensorFlow ops TFLite lacks where it names them."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    structured = [getattr(e, "error_message", "") for e in getattr(error, "errors", None) or []]
    structured = [m.strip().splitlines()[0] for m in structured if m and m.strip()]
    first_error = next((line for line in lines if "error:" in line), None)
    if structured:
        cause = structured[0]
    elif first_error:
        cause = _without_location(first_error.split("error:", 1)[1].strip())
    else:
        cause = lines[0] if lines else type(error).__name__
    if len(cause) > 300:
        cause = cause[:297] + "..."
    missing_ops = next((line.split(":", 1)[1].strip() for line in lines
                        if line.startswith("TF Select ops:")), None)
    if missing_ops:
        cause += f" (TensorFlow ops TFLite's builtins lack: {missing_ops})"
    return cause


def export_tflite(model, path, sparse=False, quantize=None, representative_data=None):
    """TFLite export (tf.lite.TFLiteConverter) with TFLite's sparse weight encoding and
    post-training quantisation: the ticket's SavedModel as a .tflite flatbuffer.

    `sparse=True` adds tf.lite.Optimize.EXPERIMENTAL_SPARSITY: the converter stores each
    Conv2D, DepthwiseConv2D and FullyConnected weight that is sparse enough (roughly half zeros
    or more on TF 2.21) in TFLite's compressed sparse format, and TFLite turns it back into a
    dense tensor once when the model is loaded (a DENSIFY op): the file shrinks, the arithmetic
    and its results stay those of the dense model. `quantize` is TFLite's post-training
    quantisation: 'dynamic' stores int8 weights (Optimize.DEFAULT), 'float16' float16 weights,
    'int8' quantises weights and activations to int8 (int8 kernels only, activation ranges
    calibrated on `representative_data`); its input and output stay float32, so the file is a
    drop-in replacement of the float one with the SavedModel's signature (an integer-only
    accelerator needing int8 input/output would have to convert with inference_input_type).

    Args:
      model: a masked network or a SparseModel (see `to_plain_model`).
      path: the .tflite file to write (written to a temporary file, then renamed: a failure
        leaves no partial file).
      sparse: store sparse weights in TFLite's sparse format.
      quantize: None (float32), 'dynamic', 'float16' or 'int8'.
      representative_data: for quantize='int8' only: an array of input examples (calibrated in
        batches of 32), an iterable of input batches, or a tf.data.Dataset of batches (x or
        (x, y[, sample_weight])); for a model of several inputs a dict of example arrays by
        input name, or batches that are each a list in the model's input order or a dict by
        input name. Every batch is used.
    Returns: path, or None (with a logged message) where this TensorFlow has no TFLite converter.
    Raises:
      ConfigError: an unknown quantize, 'int8' without representative_data (or with data that
        yields no batch or does not fit the model), sparse=True with 'dynamic' (a file the
        default interpreter cannot run), or the converter failing (the message says why).
      OSError: the file cannot be written.
    """
    import tensorflow as tf

    path = os.fspath(path)
    _check_tflite_options(sparse, quantize, representative_data)
    converter_class = getattr(getattr(tf, "lite", None), "TFLiteConverter", None)
    if converter_class is None:
        logging.warning("TFLite export skipped: this TensorFlow build has no tf.lite."
                        "TFLiteConverter (install a TensorFlow with TFLite, or use the SavedModel)")
        return None
    plain = to_plain_model(model)
    settings = f"sparse={bool(sparse)}, quantize={quantize!r}"
    with tempfile.TemporaryDirectory() as saved_model_dir:
        _write_saved_model(plain, saved_model_dir)
        converter = converter_class.from_saved_model(saved_model_dir)
        _configure(converter, sparse, quantize)
        if representative_data is not None:
            converter.representative_dataset = _representative_dataset(
                representative_data, plain.inputs)
        try:
            flatbuffer = converter.convert()
        except TfLotteryError:
            raise
        except Exception as e:  # noqa: BLE001 (the converter raises many types; one message)
            raise ConfigError(f"TFLite conversion failed ({settings}): "
                              f"{_conversion_cause(e)}") from None
    with workdir_lib.atomic_write(path, "wb") as f:
        f.write(flatbuffer)
    return path
