import math

import keras
import numpy as np
import pytest

from tf_lottery.errors import ConfigError
from tf_lottery.layers.ghosts import GhostActivation, GhostSkip, ghost_modules
from tf_lottery.layers.masked import MaskedConv2D, MaskedDense, masked_layers
from tf_lottery.training.ghost_insertion import insert_ghosts, remove_ghosts


def _masked_conv_net():
    """conv-BN-ReLU, strided conv-BN-Activation('relu'), a residual block, a 1x1 conv."""
    inputs = keras.Input((8, 8, 3))
    x = MaskedConv2D(4, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = MaskedConv2D(8, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    block_in = keras.layers.Activation("relu", name="relu2")(x)
    y = MaskedConv2D(8, 3, padding="same", name="conv3")(block_in)
    y = keras.layers.BatchNormalization(name="bn3")(y)
    y = keras.layers.Add(name="add")([y, block_in])
    y = keras.layers.ReLU(name="relu3")(y)
    y = MaskedConv2D(8, 1, name="pointwise")(y)
    y = keras.layers.ReLU(name="relu4")(y)
    y = keras.layers.GlobalAveragePooling2D(name="pool")(y)
    model = keras.Model(inputs, MaskedDense(3, name="logits")(y))
    rng = np.random.default_rng(0)
    for layer in masked_layers(model):
        layer.mask.assign((rng.random(layer.mask.shape) < 0.5).astype("float32"))
    return model


def _inputs():
    return np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)


def _fade(model):
    activations, skips = ghost_modules(model)
    for layer in activations:
        layer.set_beta(math.inf)
    for layer in skips:
        layer.alpha.assign(0.0)


def test_insert_replaces_relus_and_wraps_3x3_blocks_sharing_layers():
    model = _masked_conv_net()
    ghosted = insert_ghosts(model, kind="swish", initial_beta=1.0, initial_alpha=1.0)
    activations, skips = ghost_modules(ghosted)
    assert sorted(a.name for a in activations) == ["relu1_ghost", "relu2_ghost", "relu3_ghost",
                                                   "relu4_ghost"]
    # the 1x1 conv gets no skip; conv3's skip joins after the residual Add, before relu3
    assert sorted(s.name for s in skips) == ["conv1_ghost_skip", "conv2_ghost_skip",
                                             "conv3_ghost_skip"]
    assert ghosted.get_layer("conv2_ghost_skip").strides == (2, 2)
    relu3_input = ghosted.get_layer("relu3_ghost").input
    assert relu3_input is ghosted.get_layer("conv3_ghost_skip").output
    add_in_ghosted = ghosted.get_layer("add")._inbound_nodes[-1].outputs[0]  # shared: 2 nodes
    assert ghosted.get_layer("conv3_ghost_skip").input[1] is add_in_ghosted
    for layer in masked_layers(model):
        shared = ghosted.get_layer(layer.name)
        assert shared is layer and shared.mask is layer.mask
        assert shared.raw_kernel is layer.raw_kernel
    assert ghosted.get_layer("bn1") is model.get_layer("bn1")
    assert not any(isinstance(layer, (keras.layers.ReLU, keras.layers.Activation))
                   for layer in ghosted.layers)


def test_faded_ghosts_equal_deghosted_and_original_bit_for_bit():
    model = _masked_conv_net()
    masks = {layer.name: layer.mask.numpy().copy() for layer in masked_layers(model)}
    ghosted = insert_ghosts(model)
    x = _inputs()
    with_ghosts = ghosted.predict(x, verbose=0)
    original = model.predict(x, verbose=0)
    assert not np.allclose(with_ghosts, original)  # α = 1, Swish: a different function
    _fade(ghosted)
    restored = remove_ghosts(ghosted)
    assert ghost_modules(restored) == ([], [])
    faded = ghosted.predict(x, verbose=0)
    np.testing.assert_array_equal(faded, restored.predict(x, verbose=0))
    np.testing.assert_array_equal(faded, original)
    assert [type(layer) for layer in restored.layers] == [type(layer) for layer in model.layers]
    assert [layer.name for layer in restored.layers] == [layer.name for layer in model.layers]
    for layer in masked_layers(model):
        assert restored.get_layer(layer.name) is layer
        np.testing.assert_array_equal(layer.mask.numpy(), masks[layer.name])


def test_only_skips_or_only_activations_and_mish():
    model = _masked_conv_net()
    skips_only = insert_ghosts(model, activations=False)
    assert ghost_modules(skips_only)[0] == [] and len(ghost_modules(skips_only)[1]) == 3
    mish = insert_ghosts(model, skips=False, kind="mish", initial_beta=2.0)
    activations, skips = ghost_modules(mish)
    assert skips == [] and all(a.kind == "mish" and float(a.beta.numpy()) == 2.0
                               for a in activations)
    with pytest.raises(ConfigError):
        insert_ghosts(model, kind="gelu")


def test_trainable_after_insertion_and_sequential_models():
    model = keras.Sequential([keras.Input((5,)), MaskedDense(4), keras.layers.ReLU(),
                              MaskedDense(2)])
    ghosted = insert_ghosts(model)
    assert isinstance(ghosted.layers[2], GhostActivation)
    assert not any(isinstance(layer, GhostSkip) for layer in ghosted.layers)
    ghosted.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    x = np.random.default_rng(2).normal(size=(4, 5)).astype(np.float32)
    before = model.layers[0].raw_kernel.numpy().copy()
    ghosted.fit(x, np.array([0, 1, 0, 1]), verbose=0, epochs=1)
    # training the ghosted model trains the original's shared variables
    assert not np.array_equal(before, model.layers[0].raw_kernel.numpy())


def test_ghosted_model_saves_loads_and_deghosts(tmp_path):
    ghosted = insert_ghosts(_masked_conv_net(), initial_alpha=0.5)
    path = str(tmp_path / "ghosted.keras")
    ghosted.save(path)
    loaded = keras.models.load_model(path)
    x = _inputs()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), ghosted.predict(x, verbose=0))
    _fade(loaded)
    _fade(ghosted)
    restored = remove_ghosts(loaded)
    assert isinstance(restored.get_layer("relu2"), keras.layers.Activation)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), ghosted.predict(x, verbose=0))
