"""Losses and gradients that saliency criteria (SNIP, GraSP, SynFlow) take w.r.t. masked kernels.

A FixedMask layer computes its effective kernel w = θ ⊙ m, so ∂L/∂θ = m ⊙ ∂L/∂w: on every
unpruned weight the gradient w.r.t. the raw kernel variable θ *is* the gradient w.r.t. the
effective weight, and the pruned coordinates (m = 0) get exactly zero, as the sub-network has
no such weights. Criteria therefore differentiate w.r.t. `layer.raw_kernel` and score only
unpruned weights. Layers under other mask rules (scores, temperatures) would scale the gradient
by a soft mask, so these criteria refuse them.
"""
import keras
import tensorflow as tf

from tf_lottery.errors import ConfigError
from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.masks import prunable_layers


def sparse_categorical_loss(y, logits):
    """Mean sparse categorical cross-entropy of integer labels y and logits."""
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits,
                                                                       from_logits=True))


def fixed_mask_layers(model, exclude, criterion):
    """prunable_layers(model, exclude), checking that each applies its mask as θ ⊙ m."""
    layers = prunable_layers(model, exclude)
    others = [layer.name for layer in layers if not isinstance(layer.mask_rule, FixedMask)]
    if others:
        raise ConfigError(f"{criterion} needs FixedMask layers (kernel = θ ⊙ mask); "
                          f"{others[:5]} use other mask rules")
    if not layers:
        raise ConfigError(f"{criterion}: the model has no prunable masked layers")
    return layers


def watch_kernels(tape, layers):
    """Make `tape` record the raw kernels (also when they are not trainable)."""
    for layer in layers:
        tape.watch(layer.raw_kernel.value)


def batch_loss(model, x, y, loss_fn=None, training=False):
    """loss_fn(y, model(x)) (default: sparse categorical cross-entropy from logits)."""
    loss_fn = loss_fn or sparse_categorical_loss
    return loss_fn(y, model(x, training=training))


def kernel_gradients(model, layers, x, y, loss_fn=None, training=False):
    """[∂L/∂θ for each layer's raw kernel], L = batch_loss(model, x, y, loss_fn)."""
    kernels = [layer.raw_kernel for layer in layers]
    with tf.GradientTape() as tape:
        watch_kernels(tape, layers)
        loss = batch_loss(model, x, y, loss_fn, training)
    return tape.gradient(loss, kernels, unconnected_gradients=tf.UnconnectedGradients.ZERO)
