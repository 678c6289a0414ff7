"""sparsify(): masked twins replace exactly Dense/Conv2D/DepthwiseConv2D, weights are copied, the
outputs are the original's until something prunes, nested models and exclusions work."""
import keras
import numpy as np
import pytest

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.layers import (MASKED_TWINS, FixedMask, MaskedDense, TopKScores,
                               masked_layers)
from tf_lottery.models import sparsify


def _replaceable(model):
    return [layer for layer in compat.sublayers(model)
            if type(layer) in MASKED_TWINS]


def _assert_same_outputs(original, sparse, x):
    np.testing.assert_allclose(sparse(x, training=False), original(x, training=False),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("application", ["MobileNetV2", "ResNet50"])
def test_keras_applications_keep_their_predictions(application):
    original = getattr(keras.applications, application)(weights=None, input_shape=(32, 32, 3),
                                                         classes=10)
    replaced = _replaceable(original)
    sparse = sparsify(original)

    masked = masked_layers(sparse)
    assert len(masked) == len(replaced) > 10
    assert [layer.name for layer in masked] == [layer.name for layer in replaced]
    for old, new in zip(replaced, masked):
        assert type(new) is MASKED_TWINS[type(old)]
        assert isinstance(new.mask_rule, FixedMask)
        np.testing.assert_array_equal(new.raw_kernel.numpy(), keras.ops.convert_to_numpy(
            old.kernel))
        assert np.all(new.mask.numpy() == 1)
    assert not _replaceable(sparse)
    assert len(sparse.layers) == len(original.layers)
    # Batch-norm statistics are copied too, so inference gives the same predictions.
    x = np.random.default_rng(0).uniform(0, 255, size=(3, 32, 32, 3)).astype("float32")
    _assert_same_outputs(original, sparse, x)


def _nested_model():
    block = keras.Sequential([keras.Input((8, 8, 3)),
                              keras.layers.Conv2D(4, 3, name="block_conv"),
                              keras.layers.BatchNormalization(name="block_bn"),
                              keras.layers.ReLU(name="block_relu")], name="block")
    inner_in = keras.Input((6, 6, 4))
    inner_out = keras.layers.DepthwiseConv2D(3, name="inner_depthwise")(inner_in)
    inner = keras.Model(inner_in, keras.layers.Flatten(name="inner_flat")(inner_out),
                        name="inner")
    inputs = keras.Input((8, 8, 3))
    x = inner(block(inputs))
    shared = keras.layers.Dense(16, activation="relu", name="shared")
    x = shared(shared(keras.layers.Dense(16, name="hidden")(x)))  # one layer called twice
    outputs = keras.layers.Dense(5, name="classifier")(x)
    model = keras.Model(inputs, outputs)
    for variable in model.weights:  # non-trivial batch-norm statistics and biases
        variable.assign(np.random.default_rng(len(variable.path)).normal(
            size=variable.shape).astype("float32") * 0.3 + ("variance" in variable.path))
    return model


def test_nested_and_shared_layers_are_replaced_and_outputs_kept():
    original = _nested_model()
    sparse = sparsify(original, rule=TopKScores(1.0))
    names = [layer.name for layer in masked_layers(sparse)]
    assert sorted(names) == sorted(["block_conv", "inner_depthwise", "hidden", "shared",
                                    "classifier"])
    assert isinstance(sparse.get_layer("block"), keras.Sequential)
    assert all(isinstance(layer.mask_rule, TopKScores) and layer.scores is not None
               for layer in masked_layers(sparse))
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype("float32")
    _assert_same_outputs(original, sparse, x)  # keeping every edge changes nothing

    # The copy prunes on its own: the original keeps its weights and its outputs.
    before = original(x).numpy()
    sparse.get_layer("shared").mask.assign(np.zeros((16, 16), "float32"))
    assert not np.allclose(sparse(x), before)
    np.testing.assert_array_equal(original(x), before)


def test_exclude_by_name_or_predicate_and_unknown_names():
    original = _nested_model()
    by_name = sparsify(original, exclude=["classifier", "block_conv"])
    assert type(by_name.get_layer("classifier")) is keras.layers.Dense
    assert {layer.name for layer in masked_layers(by_name)} == {"inner_depthwise", "hidden",
                                                                "shared"}
    by_predicate = sparsify(original, exclude=lambda layer: isinstance(
        layer, keras.layers.Dense))
    assert {layer.name for layer in masked_layers(by_predicate)} == {"block_conv",
                                                                     "inner_depthwise"}
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
    _assert_same_outputs(original, by_name, x)
    with pytest.raises(ConfigError, match="clasifier"):
        sparsify(original, exclude=["clasifier"])


class ScaledDense(keras.layers.Dense):
    """A Dense subclass sparsify knows nothing about: it must stay as it is."""

    def call(self, inputs):
        return 2.0 * super().call(inputs)


def test_only_exact_classes_are_replaced_in_a_sequential_model():
    original = keras.Sequential([keras.Input((7,)), ScaledDense(6, name="scaled"),
                                 keras.layers.Dense(3, name="plain")])
    with pytest.warns(UserWarning, match=r"leaves dense .* 1 layer\(s\).*: scaled \(ScaledDense\)$"):
        sparse = sparsify(original)
    assert isinstance(sparse, keras.Sequential)
    assert type(sparse.get_layer("scaled")) is ScaledDense
    assert type(sparse.get_layer("plain")) is MaskedDense
    x = np.random.default_rng(3).normal(size=(5, 7)).astype("float32")
    _assert_same_outputs(original, sparse, x)


def test_models_sparsify_cannot_copy_are_config_errors_or_changed_in_place():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    model = Subclassed()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(ConfigError, match="cannot copy the subclassed model.*in_place=True"):
        sparsify(model, in_place=False)
    assert sparsify(model) is model and isinstance(model.dense, MaskedDense)  # in place
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ConfigError, match="built"):
        sparsify(unbuilt)
