"""TensorBoard summaries of a search's rounds, next to the per-epoch logs Keras writes.

    workdir/tensorboard/
      round_NN/train, round_NN/validation   per epoch (keras.callbacks.TensorBoard, step =
                                            epoch): loss, accuracy, learning rate, and whatever
                                            callbacks before it add to the logs (schedule values
                                            such as ghost beta/alpha, dying ratio, ...)
      rounds/                               one step per round (step = round index):
        round/<metric>               every number of the round's metrics.json: test_accuracy,
                                     remaining_fraction, sparsity, test_loss, dying_ratio, ...
        layer_density/<layer>        the fraction of the layer's weights the ticket keeps
        scores/<layer>               histogram of the layer's scores (rules that have scores)
        surviving_weights/<layer>    histogram of the raw weights the ticket keeps
        round/accuracy_vs_remaining  a text table: remaining fraction and test accuracy of every
                                     round so far (TensorBoard plots scalars against steps only)
"""
import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from tf_lottery.layers.masked import masked_layers

ROUNDS_DIR = "rounds"
_NOT_PLOTTED = {"round"}  # the step itself


def scalar_metrics(metrics):
    """{name: float} of the finite numbers among a round's metrics (booleans excluded)."""
    return {name: float(value) for name, value in metrics.items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool)
            and name not in _NOT_PLOTTED and math.isfinite(float(value))}


def accuracy_vs_remaining_table(results):
    """Markdown table of (round, remaining fraction, test accuracy) of every round."""
    rows = ["| round | remaining | test accuracy |", "|---:|---:|---:|"]
    rows += [f"| {r['round']} | {r['remaining_fraction']:.4f} | {r['test_accuracy']:.4f} |"
             for r in results]
    return "\n".join(rows)


def write_round_summary(log_dir, network, ticket, results):
    """Write the summaries of round results[-1]['round'] (see the module docstring).

    Args:
      log_dir: the event-file folder (workdir/tensorboard/rounds).
      network: the network at the end of the round.
      ticket: the round's ticket masks {layer name: 0/1 array}.
      results: the metrics of every round so far, in order, each with its 'round' index.
    """
    metrics = results[-1]
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=int(metrics["round"])):
        for name, value in scalar_metrics(metrics).items():
            tf.summary.scalar(f"round/{name}", value)
        for name, density in metrics.get("layer_densities", {}).items():
            tf.summary.scalar(f"layer_density/{name}", float(density))
        for layer in masked_layers(network):
            if layer.name not in ticket:
                continue
            if layer.scores is not None:
                scores = keras.ops.convert_to_numpy(layer.scores)
                tf.summary.histogram(f"scores/{layer.name}", scores)
            kept = keras.ops.convert_to_numpy(layer.raw_kernel)[np.asarray(ticket[layer.name]) > 0]
            if kept.size:
                tf.summary.histogram(f"surviving_weights/{layer.name}", kept)
        tf.summary.text("round/accuracy_vs_remaining", accuracy_vs_remaining_table(results))
    writer.close()
