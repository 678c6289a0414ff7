"""Top Hessian eigenvalue of the loss on a batch (ToST, Jaiswal et al., Fig. 2 and A12, computed
as in PyHessian, Yao et al. 2020): power iteration v ← Hv/‖Hv‖, λ = vᵀHv, over the weights a
mask keeps.

Hessian-vector products are double backprop: Hv = ∇_θ(∇_θL · v) with nested GradientTapes. For a
masked layer θ is the raw kernel and both v and Hv are projected with the layer's binary mask,
so the result is the top eigenvalue of the Hessian restricted to the unpruned weights (pruned
entries neither enter nor leave the iteration). Power iteration finds the eigenvalue of largest
magnitude (usually the top, positive one near a minimum), as PyHessian does.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from tf_lottery.analysis._common import (loss_function, preserved_state, project,
                                         watchable, weight_parameters)
from tf_lottery.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class HessianEigenpair:
    value: float
    vector: dict  # {variable path: array}, unit norm over all entries, zero where masked
    iterations: int
    converged: bool


def _hvp_function(model, x, y, loss_fn, params, training):
    variables = [v for v, _ in params]
    masks = [m for _, m in params]
    loss_fn = loss_function(model, loss_fn)
    x = tf.nest.map_structure(tf.convert_to_tensor, x)
    y = tf.convert_to_tensor(y)

    def loss():
        return loss_fn(y, model(x, training=training))

    watched = watchable(params)

    def hvp(vectors):
        with tf.GradientTape(watch_accessed_variables=False) as outer:
            outer.watch(watched)
            with tf.GradientTape(watch_accessed_variables=False) as inner:
                inner.watch(watched)
                value = loss()
            grads = inner.gradient(value, watched,
                                   unconnected_gradients=tf.UnconnectedGradients.ZERO)
            dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vectors)])
        products = outer.gradient(dot, watched,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return project(products, masks)

    loss()  # build lazily created state (compiled loss) eagerly, outside the traced function
    return tf.function(hvp, reduce_retracing=True), variables, masks


def hessian_vector_product(model, x, y, vectors, loss_fn=None, masks=None, include_biases=False,
                           training=False):
    """Hv for `vectors` (one array per parameter of `weight_parameters`, in its order), with v
    and Hv projected onto the masks."""
    params = weight_parameters(model, masks, include_biases)
    with preserved_state(model):
        hvp, variables, masks_ = _hvp_function(model, x, y, loss_fn, params, training)
        vectors = project([tf.cast(v, var.dtype) for v, var in zip(vectors, variables)], masks_)
        return [p.numpy() for p in hvp(vectors)]


def _dot(a, b):
    return tf.add_n([tf.reduce_sum(u * v) for u, v in zip(a, b)])


def hessian_top_eigenpair(model, x, y, loss_fn=None, masks=None, include_biases=False,
                          max_iterations=100, tolerance=1e-4, seed=0, training=False):
    """Power iteration on Hessian-vector products of loss_fn(y, model(x)) (the compiled loss if
    loss_fn is None) over the unpruned kernel entries (plus biases with `include_biases`).

    masks {layer name: 0/1 array} override the layers' own ticket masks (and restrict plain
    layers). Stops when |λ_t − λ_{t−1}| ≤ tolerance·|λ_{t−1}|. `training=True` runs the forward
    pass in training mode; every non-trainable variable (BatchNorm statistics) is restored.
    """
    if int(max_iterations) < 1:
        raise ConfigError(f"max_iterations must be at least 1, got {max_iterations!r}")
    params = weight_parameters(model, masks, include_biases)
    rng = np.random.default_rng(seed)
    with preserved_state(model):
        hvp, variables, masks_ = _hvp_function(model, x, y, loss_fn, params, training)
        vector = project([tf.constant(rng.standard_normal(v.shape), dtype=v.dtype)
                          for v in variables], masks_)
        norm = tf.sqrt(_dot(vector, vector))
        vector = [v / norm for v in vector]
        value, converged, iteration = None, False, 0
        for iteration in range(1, int(max_iterations) + 1):
            product = hvp(vector)
            new_value = float(_dot(vector, product))
            norm = tf.sqrt(_dot(product, product))
            if float(norm) == 0.0:
                value, converged = 0.0, True
                break
            vector = [p / norm for p in product]
            if value is not None and abs(new_value - value) <= tolerance * (abs(value) + 1e-12):
                value, converged = new_value, True
                break
            value = new_value
    return HessianEigenpair(value=float(value), iterations=iteration, converged=converged,
                            vector={var.path: v.numpy() for var, v in zip(variables, vector)})


def hessian_top_eigenvalue(model, x, y, loss_fn=None, masks=None, include_biases=False,
                           max_iterations=100, tolerance=1e-4, seed=0, training=False):
    """The eigenvalue of `hessian_top_eigenpair`."""
    return hessian_top_eigenpair(model, x, y, loss_fn, masks, include_biases, max_iterations,
                                 tolerance, seed, training).value
