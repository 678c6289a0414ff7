"""The model variants the benchmarks compare, all of one zoo architecture:

  plain       the same network of plain Keras layers (tf_lottery.export.to_plain_model), all
              weights trained: the reference every ratio divides by
  plain_x2    plain, with the optimizer also updating a second variable the size of each
              masked kernel (given the kernel's gradient): the floor of SigmoidScores, which
              trains scores as well as weights
  fixed       FixedMask (IMP, prune-at-init): weights trained, the mask fixed
  topk        TopKScores (edge-popup): weights frozen (edge_popup.freeze_weights), scores trained
  sigmoid     SigmoidScores: weights and scores trained
  sigmoid_l1  SigmoidScores plus continuous sparsification's λ‖σ(βs) ⊙ m‖₁ in the loss (the
              step ContinuousSparsificationSearch trains)

All train with SGD (momentum 0.9) on sparse categorical cross-entropy from logits.
"""
import keras
import numpy as np
import tensorflow as tf

from tf_lottery.export import to_plain_model
from tf_lottery.layers.mask_rules import FixedMask, SigmoidScores, TopKScores
from tf_lottery.masks import prunable_layers
from tf_lottery.models import build_model
from tf_lottery.search.continuous_sparsification import ContinuousSparsificationSearch
from tf_lottery.search.edge_popup import freeze_weights
from tf_lottery.training.sparse_model import SparseModel

VARIANTS = ("plain", "plain_x2", "fixed", "topk", "sigmoid", "sigmoid_l1")
RULES = {"plain": FixedMask, "plain_x2": FixedMask, "fixed": FixedMask,
         "topk": lambda: TopKScores(0.5), "sigmoid": SigmoidScores, "sigmoid_l1": SigmoidScores}
# what each variant's goal is measured against: the step that updates as many variables
FLOORS = {"fixed": "plain", "topk": "plain", "sigmoid": "plain_x2", "sigmoid_l1": "plain_x2"}
DESCRIPTIONS = {
    "plain": "plain Keras layers",
    "plain_x2": "plain + a 2nd kernel-sized variable updated",
    "fixed": "FixedMask",
    "topk": "TopKScores (EP: scores only)",
    "sigmoid": "SigmoidScores (weights + scores)",
    "sigmoid_l1": "SigmoidScores + CS L1 term",
}
CS_L1_PENALTY = 1e-8


class PlainWithSecondVariables(keras.Model):
    """A plain network whose optimizer also updates one variable per masked kernel, of its
    shape, with that kernel's gradient: the optimizer work of training weights and scores,
    without any mask computation."""

    def __init__(self, network, kernel_shapes):
        super().__init__()
        self.network = network
        self.second = [self.add_weight(shape=shape, initializer="zeros", name=f"second_{i}")
                       for i, shape in enumerate(kernel_shapes)]
        self._shapes = [tuple(shape) for shape in kernel_shapes]

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
        weights = self.network.trainable_weights
        gradients = tape.gradient(loss, weights)
        by_shape = {}
        for gradient, weight in zip(gradients, weights):
            by_shape.setdefault(tuple(weight.shape), []).append(gradient)
        second = [by_shape[shape].pop(0) for shape in self._shapes]
        self.optimizer.apply(gradients + second, weights + self.second)
        return {"loss": loss}


def build_network(model_name, variant, input_shape, num_classes=10, **options):
    """The (masked or plain) Keras network of one variant, built on `input_shape`."""
    keras.utils.set_random_seed(0)
    network = build_model(model_name, input_shape, num_classes, mask_rule=RULES[variant](),
                          **options)
    if variant == "plain_x2":
        shapes = [layer.mask.shape for layer in prunable_layers(network)]
        return PlainWithSecondVariables(to_plain_model(network), shapes)
    if variant == "plain":
        return to_plain_model(network)
    return network


def compile_variant(network, variant, jit_compile):
    """A compiled trainable model around `network` for `variant`."""
    if variant in ("plain", "plain_x2"):
        model = network
    else:
        if variant == "topk":
            freeze_weights(network)
        model = SparseModel(network)
        if variant == "sigmoid_l1":  # the search's own λ·Σ‖σ(βs) ⊙ m‖₁
            search = ContinuousSparsificationSearch(l1_penalty=CS_L1_PENALTY)
            search.layers = prunable_layers(network)
            model.add_regularizer("mask_l1", search._l1_penalty)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return model


def build_variant(model_name, variant, input_shape, jit_compile, **options):
    return compile_variant(build_network(model_name, variant, input_shape, **options), variant,
                           jit_compile)


def random_batch(batch_size, input_shape, num_classes=10, seed=0):
    """A fixed batch (images, integer labels) as tensors on the default device."""
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((batch_size, *input_shape), dtype=np.float32))
    y = tf.constant(rng.integers(0, num_classes, batch_size, dtype=np.int32))
    return x, y
