"""The tensorflow-model-optimization side of tf_lottery.interop.tfmot, run in its own process
(python -m tf_lottery.interop._tfmot_worker COMMAND ...) with TF_USE_LEGACY_KERAS=1:

    to_tfmot GRAPH_DIR MASKS_NPZ OUT_PATH   plain graph + ticket masks -> pruned tf_keras model;
                                            prints {"unwrapped": [layers tfmot cannot prune]}
    from_tfmot MODEL_PATH OUT_DIR           pruned tf_keras model -> plain graph + masks.npz

Errors end the process with one `error: ...` line on stderr.
"""
import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported: tf.keras is Keras 2

MASKS_FILE = "masks.npz"


def _tfmot():
    import tensorflow_model_optimization as tfmot

    return tfmot


def _is_pruning_wrapper(layer):
    # tfmot's public API does not export the PruneLowMagnitude class itself
    return type(layer).__name__ == "PruneLowMagnitude" and hasattr(layer, "pruning_vars")


def to_tfmot(graph_dir, masks_path, out_path):
    """Wrap every layer the ticket masks in prune_low_magnitude, with the ticket's masks."""
    import numpy as np
    import tf_keras

    from tf_lottery.interop import keras_graph

    tfmot = _tfmot()
    sparsity = tfmot.sparsity.keras
    model = keras_graph.load(tf_keras, graph_dir)
    with np.load(masks_path) as data:
        masks = {name: data[name] for name in data.files}
    missing = sorted(set(masks) - {layer.name for layer in model.layers})
    if missing:
        raise ValueError(f"the ticket masks layers the model does not have: {missing[:5]}")

    def wrapping(names):
        def wrap(layer):
            if layer.name not in names:
                return layer
            pruned = 1.0 - float(masks[layer.name].mean())
            schedule = sparsity.ConstantSparsity(min(pruned, 0.999999), begin_step=0,
                                                 frequency=100)
            return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule)
        return wrap

    pruned = tf_keras.models.clone_model(model, clone_function=wrapping(set(masks)))
    # tfmot registers some layers with nothing to prune (DepthwiseConv2D): no wrapper for
    # those; their kernels keep the ticket's zeros
    unprunable = sorted(layer.layer.name for layer in pruned.layers
                        if _is_pruning_wrapper(layer) and not layer.pruning_vars)
    if unprunable:
        pruned = tf_keras.models.clone_model(
            model, clone_function=wrapping(set(masks) - set(unprunable)))
    for layer in pruned.layers:
        if _is_pruning_wrapper(layer):
            (weight, mask, _), = layer.pruning_vars
            mask.assign(masks[layer.layer.name].astype(mask.dtype.as_numpy_dtype))
            weight.assign(weight.numpy() * mask.numpy())
    directory = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(directory, exist_ok=True)
    pruned.save(out_path)  # never compiled: no optimizer to leave out
    print(json.dumps({"unwrapped": unprunable}))


def from_tfmot(model_path, out_dir):
    """The masks of a tfmot-pruned model and its stripped (plain) graph."""
    import numpy as np
    import tf_keras

    from tf_lottery.interop import keras_graph

    tfmot = _tfmot()
    sparsity = tfmot.sparsity.keras
    with sparsity.prune_scope():
        model = tf_keras.models.load_model(model_path, compile=False)
    masks = {}
    for layer in model.layers:
        if _is_pruning_wrapper(layer):
            if len(layer.pruning_vars) != 1:
                raise ValueError(f"{layer.name} prunes {len(layer.pruning_vars)} weights; a "
                                 f"ticket has one mask per kernel")
            (_, mask, _), = layer.pruning_vars
            masks[layer.layer.name] = mask.numpy().astype(np.float32)
    if not masks:
        raise ValueError(f"{model_path} has no prune_low_magnitude layers")
    keras_graph.save(sparsity.strip_pruning(model), out_dir)
    np.savez(os.path.join(out_dir, MASKS_FILE), **masks)


def main(argv):
    command, *args = argv
    try:
        {"to_tfmot": to_tfmot, "from_tfmot": from_tfmot}[command](*args)
    except Exception as e:  # noqa: BLE001 - reported to the parent process as one line
        message = (str(e).strip().splitlines() or [""])[0]
        print(f"error: {type(e).__name__}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
