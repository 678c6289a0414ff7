"""sparsify and prune_low_magnitude on models tf_lottery did not write: a keras.applications
network, a subclassed transformer (changed in place), nested models and layers."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.errors import ConfigError
from tf_lottery.export.plain import to_plain_model
from tf_lottery.layers import MaskedLayerMixin, masked_layers
from tf_lottery.masks import get_masks
from tf_lottery.models import sparsify
from tf_lottery.sparsity import (ConstantSparsity, PolynomialDecay, keep_count,
                                 prune_low_magnitude)

L = keras.layers


def _fit(pruned, x, y, steps):
    pruned.compile(keras.optimizers.SGD(0.01),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x[:2 * steps], y[:2 * steps], batch_size=2, epochs=1, shuffle=False, verbose=0)
    assert int(pruned.optimizer.iterations.numpy()) == steps


def _assert_densities(model, sparsity):
    masks = get_masks(model)
    for name, mask in masks.items():
        assert np.sum(mask) == int(keep_count(mask.size, sparsity)), name


def test_keras_application_sparsifies_strips_and_prunes_per_schedule():
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                          classes=4)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    expected = base(x, training=False).numpy()
    sparse = sparsify(base)
    kernel_classes = (L.Conv2D, L.DepthwiseConv2D, L.Dense)
    kernels = [layer for layer in base.layers if isinstance(layer, kernel_classes)]
    assert len(masked_layers(sparse)) == len(kernels) > 50  # every Conv2D/Depthwise/Dense
    np.testing.assert_allclose(sparse(x, training=False).numpy(), expected, atol=1e-6)
    plain = to_plain_model(sparse)
    assert not any(isinstance(layer, MaskedLayerMixin) for layer in plain.layers)
    np.testing.assert_allclose(plain(x, training=False).numpy(), expected, atol=1e-6)

    # The updater fit() runs at each step, run eagerly here (tracing top-k over 53 layers
    # costs a minute on 2 cores); fit() itself is exercised by the two tests below.
    schedule = PolynomialDecay(0.0, 0.6, begin_step=0, end_step=2, frequency=1)
    pruned = prune_low_magnitude(base, schedule)
    updater = pruned.mask_updaters[0]
    updater.build(pruned.network)
    assert len(updater.layers) == len(kernels)
    for step in (1, 2):
        updater.update(tf.constant(step, tf.int64))
        _assert_densities(pruned.network, float(schedule.sparsity_at(step)))
    assert np.mean(get_masks(pruned.network)["Conv1"]) < 0.41  # 0.6 sparsity at step 2


class PositionBias(L.Layer):
    """A user's layer with a matrix and no get_prunable_weights(): left dense, and named."""

    def build(self, input_shape):
        self.table = self.add_weight(shape=tuple(input_shape[1:]), name="table")

    def call(self, x):
        return x + self.table


class Block(L.Layer):
    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.attention = L.MultiHeadAttention(2, 4)
        self.ffn = L.Dense(units, activation="relu")
        self.norm = L.LayerNormalization()

    def call(self, x):
        return self.norm(x + self.ffn(self.attention(x, x)))


class TinyTransformer(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embed = L.Embedding(20, 8)
        self.position = PositionBias(name="position")
        self.block = Block()
        self.head = L.Dense(3)

    def call(self, x):
        hidden = self.block(self.position(self.embed(x)))
        return self.head(keras.ops.mean(hidden, axis=1))


def _transformer(x):
    model = TinyTransformer()
    model(x)
    return model


def test_subclassed_transformer_is_masked_in_place_with_a_warning_naming_dense_layers():
    x = np.random.default_rng(0).integers(0, 20, (8, 6))
    y = np.arange(8) % 3
    model = _transformer(x)
    expected = model(x).numpy()
    with pytest.raises(ConfigError, match="in_place=True"):
        sparsify(model, in_place=False)
    with pytest.warns(UserWarning, match=r"1 layer\(s\).*position \(PositionBias\)"):
        pruned = prune_low_magnitude(model, ConstantSparsity(0.5, begin_step=0, frequency=1))
    assert pruned.network is model  # in place
    attention = model.block.attention.name
    assert sorted(get_masks(model)) == sorted(
        [model.embed.name, model.block.ffn.name, model.head.name]
        + [f"{attention}.{part}" for part in ("attention_output", "key", "query", "value")])
    np.testing.assert_array_equal(model(x).numpy(), expected)  # masks at ones

    _fit(pruned, x, y, steps=2)
    _assert_densities(model, 0.5)
    ffn = model.block.ffn
    assert np.all(keras.ops.convert_to_numpy(ffn.kernel)[ffn.mask.numpy() == 0] == 0.0)

    # weights (masks included) round-trip into a fresh model sparsified the same way
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"tiny_{os.getpid()}.weights.h5")
    model.save_weights(path)
    fresh = _transformer(x)
    with pytest.warns(UserWarning):
        sparsify(fresh)
    fresh.load_weights(path)
    os.remove(path)
    np.testing.assert_array_equal(fresh(x).numpy(), model(x).numpy())
    for ours, theirs in zip(masked_layers(model), masked_layers(fresh), strict=True):
        np.testing.assert_array_equal(theirs.mask.numpy(), ours.mask.numpy())


def test_nested_models_and_layers_prune_per_schedule_and_names_must_be_unique():
    inner = keras.Sequential([keras.Input((6, 2)), L.Conv1D(4, 2, name="conv"),
                              L.SeparableConv1D(4, 2, name="sep")], name="inner")
    inputs = keras.Input((6, 2))
    hidden = L.GlobalAveragePooling1D()(inner(inputs))
    hidden = L.Flatten()(Block(4, name="block")(hidden[:, None]))
    model = keras.Model(inputs, L.Dense(3, name="out")(hidden))
    x = np.random.default_rng(0).normal(size=(8, 6, 2)).astype("float32")
    expected = model(x).numpy()
    schedule = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=3, frequency=1)
    pruned = prune_low_magnitude(model, schedule)
    network = pruned.network
    assert network is not model and not masked_layers(model)  # the original is untouched
    assert {"conv", "sep.depthwise_kernel", "sep.pointwise_kernel", "out"} <= set(
        get_masks(network))
    assert len(get_masks(network)) == 9  # + the block's Dense and 4 attention projections
    np.testing.assert_allclose(network(x).numpy(), expected, atol=1e-6)
    updater = pruned.mask_updaters[0]  # run eagerly, as fit() would at step 2 (fit: above)
    updater.build(network)
    updater.update(tf.constant(2, tf.int64))
    _assert_densities(network, float(schedule.sparsity_at(2)))  # 0.72 at step 2
    assert not np.allclose(network(x).numpy(), expected)

    blocks = [Block(2, name="a")(inputs), Block(2, name="b")(inputs)]
    twins = keras.Model(inputs, L.Add()(blocks))
    twins.get_layer("b").ffn.name = twins.get_layer("a").ffn.name
    with pytest.raises(ConfigError, match="share names"):
        sparsify(twins, in_place=True)
