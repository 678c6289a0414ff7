"""Linear mode connectivity (Frankle et al. 2020, "Linear mode connectivity and the lottery ticket
hypothesis"; Maene Sec. 4.3): evaluate the network at θ(α) = (1−α)·θa + α·θb for evenly spaced α
in [0, 1] and report the error barrier max_α E(θ(α)) − (E(θa) + E(θb))/2.

Masked layers are interpolated in their effective weights: the kernel at α is
(1−α)·θa⊙ma + α·θb⊙mb and the mask is ma ∨ mb, so each end of the line is exactly the ticket it
came from whatever its raw kernel holds at pruned positions. Only FixedMask layers can be
interpolated this way (a scores rule would recompute the mask from interpolated scores).
"""
import os

import keras
import numpy as np

from tf_lottery import compat
from tf_lottery.analysis._common import input_batches, labelled_batches
from tf_lottery.errors import ConfigError
from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.layers.masked import masked_layers


def error_barrier(errors):
    """Frankle et al. 2020 instability: max over the path of the error minus the mean of the two
    endpoint errors (errors ordered from α = 0 to α = 1)."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 1 or errors.size < 2:
        raise ConfigError("error_barrier needs the errors at two or more points of the path")
    return float(errors.max() - 0.5 * (errors[0] + errors[-1]))


def _weight_list(model, weights):
    if isinstance(weights, (str, os.PathLike)):  # a weights file, e.g. a finished round's
        current = model.get_weights()
        try:
            model.load_weights(weights)
            weights = model.get_weights()
        finally:
            model.set_weights(current)
    if isinstance(weights, keras.Model):
        weights = weights.get_weights()
    weights = [np.asarray(w) for w in weights]
    expected = [tuple(v.shape) for v in model.weights]
    if [w.shape for w in weights] != expected:
        raise ConfigError("weights do not match the model's variables (pass model.get_weights() "
                          "of a model with the same architecture)")
    return weights


def _fold_masks(model, weights_a, weights_b):
    """Effective kernels in place of raw kernels at both ends; the union of the masks at every
    point. Returns {variable index: mask used along the whole path}."""
    index = {id(v): i for i, v in enumerate(model.weights)}
    union_masks = {}
    for layer in masked_layers(model):
        if not isinstance(layer.mask_rule, FixedMask):
            raise ConfigError(f"cannot interpolate layer {layer.name}: its mask rule "
                              f"{layer.mask_rule!r} is not FixedMask")
        k, m = index[id(layer.raw_kernel)], index[id(layer.mask)]
        weights_a[k] = weights_a[k] * weights_a[m]
        weights_b[k] = weights_b[k] * weights_b[m]
        union_masks[m] = np.maximum(weights_a[m], weights_b[m])
    return union_masks


def _point(weights_a, weights_b, alpha, fixed):
    point = []
    for i, (a, b) in enumerate(zip(weights_a, weights_b)):
        if i in fixed:
            point.append(fixed[i])
        elif np.issubdtype(a.dtype, np.floating):
            point.append(((1.0 - alpha) * a + alpha * b).astype(a.dtype))
        else:  # counters, seeds: not a coordinate of the weight space
            point.append(a)
    return point


def _batchnorm_layers(model):
    return [layer for layer in compat.sublayers(model)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def reset_batchnorm_statistics(model, batches):
    """Recompute every trainable BatchNorm layer's moving mean and variance from `batches`.

    Forward passes in training mode over the batches, with the momentum of batch i (from 0) set to
    i/(i+1), so that moving ← moving·i/(i+1) + batch_stat/(i+1) is the running average: after n
    batches the moving mean (variance) equals the average of the n batch means (biased batch
    variances), whatever the stored statistics were. Momenta are restored afterwards.
    """
    norms = _batchnorm_layers(model)
    if not norms:
        return
    momenta = [layer.momentum for layer in norms]
    try:
        for i, x in enumerate(batches):
            for layer in norms:
                layer.momentum = i / (i + 1.0)
            model(x, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum


def interpolate(model, weights_a, weights_b, eval_fn, num_points=20, bn_reset_data=None):
    """Evaluate `eval_fn(model)` at θ(α) = (1−α)·θa + α·θb for `num_points` evenly spaced α from 0
    to 1, endpoints included (Frankle et al. 2020; Maene Sec. 4.3 samples 20 points).

    weights_a, weights_b: lists like model.get_weights(), models of the same architecture, or
    paths of `.weights.h5` files of it (a workdir's round_NN/weights.weights.h5).
    eval_fn(model) returns a float or a mapping {metric name: float}, e.g. from
    `classification_eval_fn`. bn_reset_data: batches (x or (x, y) tuples, held in memory) over
    which BatchNorm moving statistics are recomputed at every point: forward passes in training
    mode with the momentum of batch i (from 0) set to i/(i+1), so the statistics come out as the
    plain average of the batch means and variances (`reset_batchnorm_statistics`). Without it
    they are interpolated like every other variable.
    Returns {"alpha": array, metric: array of values per α} (a float result is under "value").
    The model's own weights are restored afterwards.
    """
    if int(num_points) < 2:
        raise ConfigError(f"num_points must be at least 2, got {num_points!r}")
    weights_a = _weight_list(model, weights_a)
    weights_b = _weight_list(model, weights_b)
    fixed = _fold_masks(model, weights_a, weights_b)
    batches = None if bn_reset_data is None else input_batches(bn_reset_data)
    alphas = np.linspace(0.0, 1.0, int(num_points))
    results = {"alpha": alphas}
    original = model.get_weights()
    try:
        for alpha in alphas:
            model.set_weights(_point(weights_a, weights_b, alpha, fixed))
            if batches is not None:
                reset_batchnorm_statistics(model, batches)
            values = eval_fn(model)
            if not isinstance(values, dict):
                values = {"value": values}
            for name, value in values.items():
                results.setdefault(name, []).append(float(value))
    finally:
        model.set_weights(original)
    return {name: np.asarray(values) for name, values in results.items()}


def classification_eval_fn(data, from_logits=True):
    """An eval_fn giving {"loss": mean cross-entropy, "error": 1 − accuracy} of a classifier with
    integer labels over `data` (one (x, y) batch or an iterable of them), in inference mode."""
    batches = labelled_batches(data)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits,
                                                              reduction="sum")

    def evaluate(model):
        loss_sum, wrong, count = 0.0, 0, 0
        for x, y in batches:
            outputs = model(x, training=False)
            y = np.asarray(y).reshape(-1)
            loss_sum += float(cross_entropy(y, outputs))
            wrong += int(np.sum(np.argmax(np.asarray(outputs), axis=-1) != y))
            count += y.size
        return {"loss": loss_sum / count, "error": wrong / count}

    return evaluate


def lmc_metrics(curve, between=None):
    """The `lmc` entry of a round's metrics from `connectivity.interpolate`'s result with an
    `error` series (e.g. from classification_eval_fn)."""
    entry = {"alphas": [float(a) for a in curve["alpha"]],
             "errors": [float(e) for e in curve["error"]],
             "barrier": error_barrier(curve["error"])}
    if "loss" in curve:
        entry["losses"] = [float(v) for v in curve["loss"]]
    if between is not None:
        entry["between"] = list(between)
    return entry




def linear_path_metrics(model, weights_a, weights_b, test_data, num_points=20, bn_reset_data=None,
                        between=None):
    """`lmc_metrics` of the test error and loss of a classifier (integer labels, logits) along the
    line from weights_a to weights_b, with BatchNorm statistics recomputed at every point from
    `bn_reset_data` when the model has BatchNorm layers (Frankle et al. 2020)."""
    if not _batchnorm_layers(model):
        bn_reset_data = None
    curve = interpolate(model, weights_a, weights_b, classification_eval_fn(test_data),
                        num_points=num_points, bn_reset_data=bn_reset_data)
    return lmc_metrics(curve, between)
