"""SynFlow: data-free iterative pruning that conserves the synaptic flow through the network."""
import gin
import numpy as np
import tensorflow as tf

from tf_lottery.errors import ConfigError, check_fraction
from tf_lottery.layers.masked import mask_state_ids
from tf_lottery.pruning.gradients import fixed_mask_layers, watch_kernels
from tf_lottery.pruning.selection import current_masks, prune_count, remove_lowest


def _ones_input(model, input_shape):
    if input_shape is None:
        try:
            input_shape = model.input_shape
        except (AttributeError, ValueError) as error:
            raise ConfigError("SynFlow needs the input shape: pass input_shape= (without the "
                              "batch axis) or build the model on a keras.Input") from error
        if isinstance(input_shape, list) or not isinstance(input_shape[0], (int, type(None))):
            raise ConfigError(f"SynFlow supports one input, the model has {input_shape}")
        input_shape = input_shape[1:]
    if any(d is None for d in input_shape):
        raise ConfigError(f"SynFlow needs a fully known input shape, got {tuple(input_shape)}")
    return tf.ones((1,) + tuple(input_shape), dtype=getattr(model, "compute_dtype", "float32"))


def _linearized_variables(model):
    """Float variables SynFlow sets to |θ|: every weight and statistic of the model (as the
    authors' code does to its whole state dict) except the masked layers' masks/rule state."""
    mask_state = mask_state_ids(model)
    return [v for v in model.variables
            if id(v) not in mask_state and "float" in str(v.dtype)]


def flow_gradients_fn(model, layers, ones):
    """A traced function returning [∂R/∂θ per layer], R = 1ᵀ f(1; θ ⊙ m) at the current
    variables (SynFlow calls it after setting the weights to |θ|)."""
    kernels = [layer.raw_kernel for layer in layers]

    @tf.function
    def flow_gradients():
        with tf.GradientTape() as tape:
            watch_kernels(tape, layers)
            flow = tf.reduce_sum(model(ones, training=False))
        return tape.gradient(flow, kernels, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return flow_gradients


@gin.configurable
def synflow_masks(model, prune_fraction, iterations=100, input_shape=None, exclude=()):
    """SynFlow (Tanaka et al. 2020, Algorithm 1): with θ → |θ| and input 1, R = 1ᵀ f(1; θ ⊙ μ),
    score S = |θ ⊙ ∂R/∂θ|; for i = 1..n keep the top density^(i/n) of the starting weights
    (density = 1 - prune_fraction), re-scoring after each step; global over all layers.

    Args: model, prune_fraction, exclude as for snip_masks; iterations: n, the pruning steps;
    input_shape: of one example (default: the model's own).

    Data-free: no batch is used. Removed after step i: round-half-up((1 - density^(i/n))·N) of
    the N weights unpruned at the start (exactly round-half-up(prune_fraction·N) at i = n).
    The model runs with training=False (BatchNorm on its moving statistics, also made |·|,
    as the authors' code does with model.eval()); all weights and masks are restored after.
    R is computed in the model's dtype: a deep float32 net can overflow it, which ends in a
    TrainingError about non-finite scores.
    """
    prune_fraction = check_fraction("prune_fraction", prune_fraction)
    if int(iterations) != iterations or iterations < 1:
        raise ConfigError(f"iterations must be a positive integer, got {iterations!r}")
    layers = fixed_mask_layers(model, exclude, "SynFlow")
    ones = _ones_input(model, input_shape)
    masks = current_masks(layers)
    start_remaining = sum(int(np.sum(m)) for m in masks.values())
    density = 1.0 - prune_fraction
    saved = [(v, v.numpy()) for v in model.variables]
    try:
        for variable in _linearized_variables(model):
            variable.assign(np.abs(variable.numpy()))
        flow_gradients = flow_gradients_fn(model, layers, ones)
        for i in range(1, iterations + 1):
            removed_by_now = prune_count(1.0 - density ** (i / iterations), start_remaining)
            if i == iterations:
                removed_by_now = prune_count(prune_fraction, start_remaining)
            remaining = sum(int(np.sum(m)) for m in masks.values())
            n_remove = remaining - (start_remaining - removed_by_now)
            if n_remove == 0:
                continue  # nothing to remove: re-scoring would not change the mask
            for layer in layers:
                layer.mask.assign(masks[layer.name])
            scores = {layer.name: np.abs(layer.raw_kernel.numpy() * masks[layer.name] * g.numpy())
                      for layer, g in zip(layers, flow_gradients())}
            masks = remove_lowest(scores, masks, n_remove)
    finally:
        for variable, value in saved:
            variable.assign(value)
    return masks
