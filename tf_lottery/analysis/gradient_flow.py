"""Gradient flow (Evci et al. 2020, "Gradient flow in sparse neural networks and how lottery
tickets win"): ‖∇_θL ⊙ m‖₂, the Euclidean norm of the loss gradient over the unpruned weights.

θ is each kernel layer's kernel (a masked layer's raw kernel, whose gradient is then projected
with the layer's binary mask), plus the biases with `include_biases`; the norm is taken over all
of them together.
"""
import tensorflow as tf

from tf_lottery.analysis._common import (loss_function, preserved_state, project,
                                         watchable, weight_parameters)


def masked_gradients(model, x, y, loss_fn=None, masks=None, include_biases=False,
                     training=False):
    """[∇L ⊙ m] for the parameters of `weight_parameters`, in its order."""
    params = weight_parameters(model, masks, include_biases)
    loss_fn = loss_function(model, loss_fn)
    watched = watchable(params)
    with preserved_state(model):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(watched)
            loss = loss_fn(y, model(x, training=training))
        grads = tape.gradient(loss, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return project(grads, [m for _, m in params])


def gradient_flow(model, x, y, loss_fn=None, masks=None, include_biases=False, training=False):
    """‖∇_θL ⊙ m‖₂ of loss_fn(y, model(x)) (the compiled loss if loss_fn is None); masks
    {layer name: 0/1 array} override the layers' own ticket masks. With `training=True` the forward
    pass runs in training mode and non-trainable variables are restored afterwards."""
    grads = masked_gradients(model, x, y, loss_fn, masks, include_biases, training)
    return float(tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads])))
