import math

import keras
import numpy as np
import pytest

from tf_lottery.errors import ConfigError
from tf_lottery.layers.masked import MaskedDense, masked_layers
from tf_lottery.training.lrsi import layerwise_rescaled_init, one_step_losses


def _masked_mlp():
    inputs = keras.Input((6,))
    x = MaskedDense(12, name="fc1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = MaskedDense(12, activation="relu", name="fc2")(x)
    model = keras.Model(inputs, MaskedDense(3, name="logits")(x))
    rng = np.random.default_rng(0)
    for layer in masked_layers(model):
        layer.mask.assign((rng.random(layer.mask.shape) < 0.5).astype("float32"))
    return model


def _batch():
    rng = np.random.default_rng(1)
    return rng.normal(size=(32, 6)).astype(np.float32), rng.integers(0, 3, size=(32,))


def _state(model):
    return {layer.name: (layer.raw_kernel.numpy().copy(), layer.mask.numpy().copy(),
                         layer.binary_mask().numpy().copy(), layer.kernel.numpy().copy())
            for layer in masked_layers(model)}


def test_learned_scales_lower_the_post_step_loss_and_keep_masks():
    model = _masked_mlp()
    x, y = _batch()
    before = _state(model)
    moving_mean = model.get_layer("bn").moving_mean.numpy().copy()
    baseline = one_step_losses(model, x, y)["post_step_loss"]
    scales = layerwise_rescaled_init(model, [(x, y)], gradient_norm_bound=math.inf,
                                     scale_learning_rate=0.05, iterations=25)
    assert set(scales) == {"fc1", "fc2", "logits"}
    assert all(scale >= 0.01 for scale in scales.values())
    assert any(abs(scale - 1) > 1e-3 for scale in scales.values())
    # the rescaled model (scales now folded in) takes a better first SGD step
    assert one_step_losses(model, x, y)["post_step_loss"] < baseline - 1e-3
    after = _state(model)
    for name, scale in scales.items():
        raw_before, mask_before, binary_before, effective_before = before[name]
        raw_after, mask_after, binary_after, effective_after = after[name]
        np.testing.assert_array_equal(mask_after, mask_before)
        np.testing.assert_array_equal(binary_after, binary_before)
        np.testing.assert_array_equal(effective_after == 0, effective_before == 0)
        np.testing.assert_allclose(raw_after, scale * raw_before, rtol=1e-6)
    np.testing.assert_array_equal(model.get_layer("bn").moving_mean.numpy(), moving_mean)


def test_one_step_losses_follow_given_scales():
    model = _masked_mlp()
    x, y = _batch()
    ones = one_step_losses(model, x, y)
    explicit = one_step_losses(model, x, y, scales=[1.0, 1.0, 1.0])
    assert explicit == pytest.approx(ones)
    scaled = one_step_losses(model, x, y, scales=[1.0, 1.0, 3.0])  # logits ×3
    assert scaled["loss"] != pytest.approx(ones["loss"])


def test_gradient_norm_constraint_steps_shrink_the_gradient():
    model = _masked_mlp()
    x, y = _batch()
    norm_before = one_step_losses(model, x, y)["gradient_norm"]
    scales = layerwise_rescaled_init(model, [(x, y)], gradient_norm_bound=1e-3,
                                     scale_learning_rate=0.05, iterations=10, min_scale=0.05)
    assert one_step_losses(model, x, y)["gradient_norm"] < norm_before
    assert all(scale >= 0.05 for scale in scales.values())


def test_lrsi_checks():
    model = _masked_mlp()
    with pytest.raises(ConfigError):
        layerwise_rescaled_init(model, [_batch()], min_scale=0.0)
    with pytest.raises(ConfigError):
        layerwise_rescaled_init(model, [], iterations=1)
