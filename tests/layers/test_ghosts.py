import math

import keras
import numpy as np
import pytest

from tf_lottery.errors import ConfigError
from tf_lottery.layers.ghosts import GhostActivation, GhostSkip, ghost_modules, ghosts_faded


def _bits(array):
    return np.asarray(array, np.float32).view(np.uint32)


def _awkward_inputs():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, 6)).astype(np.float32) * 5
    values[0, :4] = [0.0, -0.0, 1e-30, -1e-30]
    return values


def test_parametric_swish_and_mish_values_by_hand():
    x = np.array([[2.0, -1.0]], np.float32)
    swish = GhostActivation("swish", initial_beta=0.5)
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    np.testing.assert_allclose(swish(x), [[2 * sigmoid(1.0), -1 * sigmoid(-0.5)]], rtol=1e-6)
    mish = GhostActivation("mish", initial_beta=1.0)
    np.testing.assert_allclose(mish(np.array([[1.0]], np.float32)),
                               [[math.tanh(math.log(1 + math.e))]], rtol=1e-6)
    # β = 0: PSwish is x/2 (the identity scaled by σ(0)).
    np.testing.assert_allclose(GhostActivation("swish", initial_beta=0.0)(x), x / 2)


def test_relu_switch_is_bit_exact_and_reversible():
    x = _awkward_inputs()
    layer = GhostActivation("swish", initial_beta=3.0)
    assert not np.array_equal(_bits(layer(x)), _bits(keras.activations.relu(x)))
    layer.set_beta(math.inf)
    assert bool(layer.relu.numpy())
    np.testing.assert_array_equal(_bits(layer(x)), _bits(keras.activations.relu(x)))
    # compiled, inside a model
    inputs = keras.Input((6,))
    model = keras.Model(inputs, layer(inputs))
    np.testing.assert_array_equal(_bits(model.predict(x, verbose=0)),
                                  _bits(keras.activations.relu(x)))
    layer.set_beta(2.0)
    assert not bool(layer.relu.numpy()) and float(layer.beta.numpy()) == 2.0
    np.testing.assert_allclose(model.predict(x, verbose=0), x / (1 + np.exp(-2 * x)), rtol=1e-5)


def test_ghost_variables_are_non_trainable_first_replica():
    act, skip = GhostActivation(), GhostSkip()
    for variable in (act.beta, act.relu, skip.alpha):
        assert not variable.trainable
        assert variable.aggregation == "only_first_replica"
    assert act.trainable_weights == [] and skip.trainable_weights == []


def test_skip_adds_alpha_times_input_same_shape():
    block_input = np.arange(6, dtype=np.float32).reshape(2, 3)
    block_output = np.ones((2, 3), np.float32)
    skip = GhostSkip(initial_alpha=0.5)
    np.testing.assert_allclose(skip([block_input, block_output]), 1 + 0.5 * block_input)


def test_skip_projection_subsamples_and_zero_pads_channels():
    block_input = np.arange(32, dtype=np.float32).reshape(1, 4, 4, 2)
    block_output = np.zeros((1, 2, 2, 3), np.float32)
    out = GhostSkip(initial_alpha=1.0)([block_input, block_output]).numpy()
    np.testing.assert_array_equal(out[..., :2], block_input[:, ::2, ::2, :])
    np.testing.assert_array_equal(out[..., 2], 0.0)
    # narrowing keeps the first channels; 'valid' shrinkage is centre-cropped
    narrow = GhostSkip(strides=(1, 1))([block_input, np.zeros((1, 2, 2, 1), np.float32)])
    np.testing.assert_array_equal(narrow.numpy(), block_input[:, 1:3, 1:3, :1])


def test_skip_alpha_zero_returns_block_output_bit_for_bit():
    block_output = _awkward_inputs()
    block_input = np.full_like(block_output, np.nan)
    block_input[1] = np.inf
    skip = GhostSkip(initial_alpha=1.0)
    skip.alpha.assign(0.0)
    np.testing.assert_array_equal(_bits(skip([block_input, block_output])), _bits(block_output))
    inputs = [keras.Input((6,)), keras.Input((6,))]
    model = keras.Model(inputs, skip(inputs))
    np.testing.assert_array_equal(
        _bits(model.predict([block_input, block_output], verbose=0)), _bits(block_output))


def test_skip_rejects_impossible_projection():
    with pytest.raises(ConfigError):
        GhostSkip()([np.zeros((1, 2, 2, 1), np.float32), np.zeros((1, 4, 4, 1), np.float32)])
    with pytest.raises(ConfigError):
        GhostActivation("tanh")


def test_ghost_model_saves_and_loads_with_state(tmp_path):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4)(inputs)
    hidden = GhostSkip(name="skip")([inputs, hidden])
    outputs = GhostActivation("mish", name="act")(hidden)
    model = keras.Model(inputs, outputs)
    model.get_layer("skip").alpha.assign(0.25)
    model.get_layer("act").set_beta(math.inf)
    path = str(tmp_path / "ghosts.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert float(loaded.get_layer("skip").alpha.numpy()) == 0.25
    assert bool(loaded.get_layer("act").relu.numpy())
    assert loaded.get_layer("act").kind == "mish"
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_ghost_modules_and_faded():
    inputs = keras.Input((4,))
    hidden = GhostSkip()([inputs, keras.layers.Dense(4)(inputs)])
    model = keras.Model(inputs, GhostActivation()(hidden))
    activations, skips = ghost_modules(model)
    assert len(activations) == 1 and len(skips) == 1
    assert not ghosts_faded(model)
    activations[0].set_beta(math.inf)
    assert not ghosts_faded(model)
    skips[0].alpha.assign(0.0)
    assert ghosts_faded(model)
