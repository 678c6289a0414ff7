"""The model variants the benchmarks compare, all of one zoo architecture:

  plain       the same network of plain Keras layers (tf_lottery.export.to_plain_model), all
              weights trained: the reference every ratio divides by
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

VARIANTS = ("plain", "fixed", "topk", "sigmoid", "sigmoid_l1")
RULES = {"plain": FixedMask, "fixed": FixedMask, "topk": lambda: TopKScores(0.5),
         "sigmoid": SigmoidScores, "sigmoid_l1": SigmoidScores}
DESCRIPTIONS = {
    "plain": "plain Keras layers",
    "fixed": "FixedMask",
    "topk": "TopKScores (EP: scores only)",
    "sigmoid": "SigmoidScores (weights + scores)",
    "sigmoid_l1": "SigmoidScores + CS L1 term",
}
CS_L1_PENALTY = 1e-8


def build_network(model_name, variant, input_shape, num_classes=10, **options):
    """The (masked or plain) Keras network of one variant, built on `input_shape`."""
    keras.utils.set_random_seed(0)
    network = build_model(model_name, input_shape, num_classes, mask_rule=RULES[variant](),
                          **options)
    if variant == "plain":
        return to_plain_model(network)
    return network


def compile_variant(network, variant, jit_compile):
    """A compiled trainable model around `network` for `variant`."""
    if variant == "plain":
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
