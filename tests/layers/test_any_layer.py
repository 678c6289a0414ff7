"""Masks on every Keras layer with a kernel: the new twins, SeparableConv's two kernels,
MultiHeadAttention's projections, a user's PrunableLayer; each against numpy's masked kernel."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.export.plain import to_plain_model
from tf_lottery.layers import (MASKED_TWINS, MaskedLayerMixin, MaskHost, PrunableLayer,
                               WeightMask, masked_layers)
from tf_lottery.masks import get_masks, set_masks
from tf_lottery.models import sparsify

L = keras.layers
# (name, layer factory, input shape, integer inputs)
CASES = {
    "conv1d": (lambda: L.Conv1D(3, 2, name="x"), (5, 2), False),
    "conv3d": (lambda: L.Conv3D(2, 2, name="x"), (3, 3, 3, 2), False),
    "conv1d_transpose": (lambda: L.Conv1DTranspose(3, 2, strides=2, name="x"), (4, 2), False),
    "conv2d_transpose": (lambda: L.Conv2DTranspose(3, 2, name="x"), (3, 3, 2), False),
    "conv3d_transpose": (lambda: L.Conv3DTranspose(2, 2, name="x"), (2, 2, 2, 2), False),
    "depthwise_conv1d": (lambda: L.DepthwiseConv1D(2, depth_multiplier=2, name="x"), (5, 3),
                         False),
    "einsum_dense": (lambda: L.EinsumDense("abc,cd->abd", (None, 4), bias_axes="d", name="x"),
                     (3, 5), False),
    "embedding": (lambda: L.Embedding(7, 4, name="x"), (5,), True),
    "separable_conv1d": (lambda: L.SeparableConv1D(3, 2, depth_multiplier=2, name="x"), (5, 2),
                         False),
    "separable_conv2d": (lambda: L.SeparableConv2D(3, 2, name="x"), (4, 4, 2), False),
}
MASK_NAMES = {"separable_conv1d": ["x.depthwise_kernel", "x.pointwise_kernel"],
              "separable_conv2d": ["x.depthwise_kernel", "x.pointwise_kernel"]}


def _inputs(shape, integer, seed=0):
    rng = np.random.default_rng(seed)
    if integer:
        return rng.integers(0, 7, (2,) + shape)
    return rng.normal(size=(2,) + shape).astype("float32")


def _random_masks(masks, seed=1):
    rng = np.random.default_rng(seed)
    out = {}
    for name, mask in masks.items():
        new = (rng.random(mask.shape) < 0.5).astype("float32")
        new.flat[0], new.flat[-1] = 0.0, 1.0
        out[name] = new
    return out


def _with_masked_weights(model, masks, names):
    """A plain copy of `model` whose masked variables hold θ ⊙ m computed in numpy."""
    plain = keras.models.clone_model(model)
    plain.set_weights(model.get_weights())
    layer = plain.get_layer("x")
    for name, mask in masks.items():
        attribute = {"x": "embeddings" if isinstance(layer, L.Embedding) else "kernel",
                     "x.depthwise_kernel": "depthwise_kernel",
                     "x.pointwise_kernel": "pointwise_kernel"}[name]
        variable = getattr(layer, attribute)
        variable.assign(variable.numpy() * mask)
    assert sorted(masks) == sorted(names)
    return plain


@pytest.mark.parametrize("case", sorted(CASES))
def test_masked_layer_matches_numpy_masking_saves_and_strips(case, tmp_path):
    factory, shape, integer = CASES[case]
    inputs = keras.Input(shape, dtype="int32" if integer else "float32")
    model = keras.Model(inputs, factory()(inputs))
    x = _inputs(shape, integer)
    expected = model(x).numpy()

    sparse = sparsify(model)
    layer = sparse.get_layer("x")
    assert type(layer) is MASKED_TWINS[type(model.get_layer("x"))]
    names = MASK_NAMES.get(case, ["x"])
    assert sorted(get_masks(sparse)) == names
    np.testing.assert_array_equal(sparse(x).numpy(), expected)  # masks at ones: same outputs

    masks = _random_masks(get_masks(sparse))
    set_masks(sparse, masks)
    masked = sparse(x).numpy()
    reference = _with_masked_weights(model, masks, names)(x).numpy()
    np.testing.assert_allclose(masked, reference, rtol=1e-5, atol=1e-5)
    assert not np.allclose(masked, expected)  # the mask does change the outputs

    # gradient of a pruned weight is exactly zero, of kept weights not all zero
    by_name = {m.name: m for m in masked_layers(sparse)}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(sparse(x)))
    kernels = [by_name[name].raw_kernel for name in names]
    for name, grad in zip(names, tape.gradient(loss, kernels)):
        grad = tf.convert_to_tensor(grad).numpy()
        assert np.all(grad[masks[name] == 0] == 0.0)
        assert np.any(grad[masks[name] == 1] != 0.0)

    path = os.path.join(tmp_path, "m.keras")
    sparse.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(x).numpy(), masked)
    for name, mask in get_masks(loaded).items():
        np.testing.assert_array_equal(mask, masks[name])

    plain = to_plain_model(sparse)
    assert type(plain.get_layer("x")) is type(model.get_layer("x"))
    assert not any(isinstance(m, (MaskedLayerMixin, MaskHost))
                   for m in compat.sublayers(plain, include_self=True))
    np.testing.assert_allclose(plain(x).numpy(), masked, rtol=1e-6, atol=1e-6)


def test_multi_head_attention_masks_its_four_projections(tmp_path):
    inputs = keras.Input((4, 6))
    model = keras.Model(inputs, L.MultiHeadAttention(2, 3, name="att")(inputs, inputs))
    x = _inputs((4, 6), False)
    expected = model(x).numpy()
    sparse = sparsify(model)
    names = ["att.attention_output", "att.key", "att.query", "att.value"]
    assert sorted(get_masks(sparse)) == names
    np.testing.assert_array_equal(sparse(x).numpy(), expected)

    masks = _random_masks(get_masks(sparse))
    set_masks(sparse, masks)
    plain = keras.models.clone_model(model)
    plain.set_weights(model.get_weights())
    attention = plain.get_layer("att")
    for name, attribute in zip(names, ["_output_dense", "_key_dense", "_query_dense",
                                       "_value_dense"]):
        kernel = getattr(attention, attribute).kernel
        kernel.assign(kernel.numpy() * masks[name])
    masked = sparse(x).numpy()
    np.testing.assert_allclose(masked, plain(x).numpy(), rtol=1e-5, atol=1e-6)

    path = os.path.join(tmp_path, "att.keras")
    sparse.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path)(x).numpy(), masked)
    stripped = to_plain_model(sparse)
    assert type(stripped.get_layer("att")) is L.MultiHeadAttention
    np.testing.assert_allclose(stripped(x).numpy(), masked, rtol=1e-6, atol=1e-6)


@keras.saving.register_keras_serializable("tests_any_layer")
class Bilinear(PrunableLayer, L.Layer):
    """y = (x W) ⊙ (x V) + b: two prunable matrices and a bias that is not."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.v = self.add_weight(shape=(input_shape[-1], self.units), name="v")
        self.b = self.add_weight(shape=(self.units,), name="b", initializer="ones")

    def call(self, x):
        return tf.matmul(x, self.w) * tf.matmul(x, self.v) + self.b

    def get_prunable_weights(self):
        return [self.w, self.v]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_custom_prunable_layer_gets_one_mask_per_prunable_weight():
    inputs = keras.Input((5,))
    model = keras.Model(inputs, Bilinear(3, name="bil")(inputs))
    x = _inputs((5,), False)
    expected = model(x).numpy()
    sparse = sparsify(model)
    layer = sparse.get_layer("bil")
    assert isinstance(layer, Bilinear) and isinstance(layer, MaskHost)
    assert sorted(get_masks(sparse)) == ["bil.v", "bil.w"]
    assert all(isinstance(m, WeightMask) for m in masked_layers(sparse))
    np.testing.assert_array_equal(sparse(x).numpy(), expected)

    masks = _random_masks(get_masks(sparse))
    set_masks(sparse, masks)
    w, v, b = model.get_layer("bil").get_weights()
    reference = (x @ (w * masks["bil.w"])) * (x @ (v * masks["bil.v"])) + b
    np.testing.assert_allclose(sparse(x).numpy(), reference, rtol=1e-5, atol=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(sparse(x))
    raw_w = {m.name: m for m in masked_layers(sparse)}["bil.w"].raw_kernel
    grad_w, grad_b = tape.gradient(loss, [raw_w, layer.b])
    assert np.all(grad_w.numpy()[masks["bil.w"] == 0] == 0.0)
    assert np.all(grad_b.numpy() != 0.0)  # the bias is not masked

    plain = to_plain_model(sparse)
    assert type(plain.get_layer("bil")) is Bilinear
    np.testing.assert_allclose(plain(x).numpy(), reference, rtol=1e-5, atol=1e-6)


class HiddenWeight(L.Layer):
    def build(self, input_shape):
        self._store = [self.add_weight(shape=(input_shape[-1], 2), name="w")]

    def call(self, x):
        return tf.matmul(x, self._store[0])

    def get_prunable_weights(self):
        return [self._store[0]]


def test_prunable_weight_not_held_in_an_attribute_is_a_config_error():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, HiddenWeight(name="hidden")(inputs))
    with pytest.raises(ConfigError, match="hidden.*not an attribute"):
        sparsify(model, in_place=True)


def test_layer_converted_in_place_gets_training_from_keras():
    """A Conv2D (whose call takes no `training`) turned into its twin in place is called with
    `training` like a MaskedConv2D built from config, so training-time rules see it."""
    conv = L.Conv2D(2, 2)
    conv(np.zeros((1, 3, 3, 1), "float32"))
    model = keras.Sequential([keras.Input((3, 3, 1)), conv])
    sparsify(model, in_place=True)
    assert isinstance(conv, MaskedLayerMixin) and conv._call_has_training_arg
    seen = []
    conv.effective_mask = lambda training=None: seen.append(training) or conv.mask
    model(np.zeros((1, 3, 3, 1), "float32"), training=True)
    assert seen == [True]
