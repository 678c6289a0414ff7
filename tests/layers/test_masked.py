"""Masked layers: pruned weights stay pruned, gradients, parity with Keras, saving/restoring."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.layers import (MASKED_TWINS, FixedMask, MaskedConv2D, MaskedDense,
                               MaskedDepthwiseConv2D, SigmoidScores, TopKScores, dense_variables,
                               mask_state_ids, masked_layers)

KERAS_PARENT = {twin: parent for parent, twin in MASKED_TWINS.items()}


def _random_mask(shape, seed=1, density=0.5):
    rng = np.random.default_rng(seed)
    mask = (rng.random(shape) < density).astype("float32")
    mask.flat[0], mask.flat[-1] = 0.0, 1.0  # both pruned and kept entries, whatever the draw
    return mask


def _one_layer_model(kind, mask_rule=None):
    """A model whose first layer is masked, followed by a plain head; returns (model, layer)."""
    if kind == "dense":
        inputs = keras.Input((6,))
        layer = MaskedDense(5, mask_rule=mask_rule, name="masked")
        hidden = layer(inputs)
    else:
        inputs = keras.Input((5, 5, 2))
        layer = MaskedConv2D(3, 3, padding="same", mask_rule=mask_rule, name="masked")
        hidden = keras.layers.Flatten()(layer(inputs))
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Activation("tanh")(hidden))
    return keras.Model(inputs, outputs), layer


OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adamw_decay": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5),
}


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_pruned_weights_stay_exactly_zero_in_the_effective_kernel(kind, optimizer):
    model, layer = _one_layer_model(kind)
    mask = _random_mask(tuple(layer.mask.shape))
    layer.mask.assign(mask)
    raw_before = layer.raw_kernel.numpy().copy()
    assert np.all(raw_before[mask == 0] != 0)  # the raw values under the mask are not zero

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400,) + tuple(model.input_shape[1:])).astype("float32")
    y = rng.normal(size=(400, 2)).astype("float32")
    model.compile(optimizer=OPTIMIZERS[optimizer](), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)  # 50 steps
    assert int(model.optimizer.iterations.numpy()) == 50

    effective = keras.ops.convert_to_numpy(layer.kernel)
    raw_after = layer.raw_kernel.numpy()
    assert np.all(effective[mask == 0] == 0.0)
    np.testing.assert_array_equal(effective[mask == 1], raw_after[mask == 1])
    assert np.all(raw_after[mask == 1] != raw_before[mask == 1])  # training did move kept weights
    if optimizer == "adamw_decay":
        # Decoupled weight decay shrinks the raw pruned values; the mask keeps them out anyway.
        assert np.all(np.abs(raw_after[mask == 0]) < np.abs(raw_before[mask == 0]))
    else:
        # Their gradient is exactly zero, so momentum and Adam moments never move them.
        np.testing.assert_array_equal(raw_after[mask == 0], raw_before[mask == 0])
    # Inference uses the masked kernel too: the pruned raw values have no effect.
    out = model.predict(x[:4], verbose=0)
    layer.raw_kernel.assign(np.where(mask == 0, 1e3, raw_after))
    np.testing.assert_array_equal(model.predict(x[:4], verbose=0), out)


def _built_layer(cls, rule=None):
    if cls is MaskedDense:
        layer, shape = MaskedDense(4, mask_rule=rule), (3, 5)
    elif cls is MaskedConv2D:
        layer, shape = MaskedConv2D(4, 3, mask_rule=rule), (2, 6, 6, 3)
    else:
        layer, shape = MaskedDepthwiseConv2D(3, depth_multiplier=2, mask_rule=rule), (2, 6, 6, 3)
    layer.build(shape)
    return layer, tf.random.normal(shape, seed=3)


@pytest.mark.parametrize("cls", [MaskedDense, MaskedConv2D, MaskedDepthwiseConv2D])
@pytest.mark.parametrize("rule", [FixedMask(), TopKScores(0.5), SigmoidScores(3.0)],
                         ids=["fixed", "topk", "sigmoid"])
def test_gradient_of_masked_raw_kernel_entries_is_exactly_zero(cls, rule):
    layer, x = _built_layer(cls, rule)
    mask = _random_mask(tuple(layer.mask.shape), seed=2)
    layer.mask.assign(mask)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.sin(layer(x, training=True)))
    grad = tape.gradient(loss, layer.raw_kernel.value).numpy()
    applied = keras.ops.convert_to_numpy(layer.effective_mask(training=False))
    assert np.all(grad[mask == 0] == 0.0)
    assert np.all(grad[applied == 0] == 0.0)  # also edges a top-k rule leaves out
    assert np.count_nonzero(grad[applied != 0]) > 0.9 * np.count_nonzero(applied)


@pytest.mark.parametrize("cls", [MaskedDense, MaskedConv2D, MaskedDepthwiseConv2D])
def test_forward_pass_equals_the_keras_layer_with_kernel_times_mask(cls):
    layer, x = _built_layer(cls)
    parent = KERAS_PARENT[cls].from_config(
        {k: v for k, v in layer.get_config().items()
         if k not in ("mask_rule", "score_initializer", "name")})
    parent.build(x.shape)
    raw, bias = layer.raw_kernel.numpy(), np.random.default_rng(4).normal(size=layer.bias.shape)
    layer.bias.assign(bias)
    # With an all-ones mask the masked layer is the Keras layer with the same weights.
    parent.set_weights([raw, bias])
    unmasked = parent(x)
    np.testing.assert_allclose(layer(x), unmasked, rtol=1e-6, atol=1e-6)
    # With a mask it is the Keras layer whose kernel was multiplied by the mask.
    mask = _random_mask(raw.shape, seed=5)
    layer.mask.assign(mask)
    parent.set_weights([raw * mask, bias])
    np.testing.assert_allclose(layer(x), parent(x), rtol=1e-6, atol=1e-6)
    assert not np.allclose(layer(x), unmasked, atol=1e-3)


@pytest.mark.parametrize("strides,padding,depth_multiplier",
                         [(1, "valid", 1), (2, "same", 2), (1, "same", 3)])
def test_masked_depthwise_matches_keras_depthwise(strides, padding, depth_multiplier):
    kwargs = dict(kernel_size=3, strides=strides, padding=padding,
                  depth_multiplier=depth_multiplier, activation="relu")
    masked, plain = MaskedDepthwiseConv2D(**kwargs), keras.layers.DepthwiseConv2D(**kwargs)
    x = tf.random.normal((2, 7, 7, 4), seed=6)
    masked.build(x.shape)
    plain.build(x.shape)
    bias = np.random.default_rng(7).normal(size=masked.bias.shape).astype("float32")
    masked.bias.assign(bias)
    plain.set_weights([masked.raw_kernel.numpy(), bias])
    np.testing.assert_array_equal(masked.mask.numpy(), np.ones(masked.raw_kernel.shape))
    np.testing.assert_allclose(masked(x), plain(x), rtol=1e-6, atol=1e-6)
    assert masked(x).shape == plain(x).shape


def _mixed_model():
    inputs = keras.Input((6, 6, 2))
    x = MaskedConv2D(4, 3, name="conv", mask_rule=FixedMask())(inputs)
    x = MaskedDepthwiseConv2D(3, name="depthwise", mask_rule=TopKScores(0.4))(x)
    x = keras.layers.Flatten()(x)
    outputs = MaskedDense(3, name="output", mask_rule=SigmoidScores(2.0))(x)
    return keras.Model(inputs, outputs)


def _perturb_state(model):
    """Give masks, scores and rule state values no fresh layer would have."""
    rng = np.random.default_rng(8)
    for layer in masked_layers(model):
        layer.mask.assign(_random_mask(tuple(layer.mask.shape), seed=len(layer.name)))
        if layer.scores is not None:
            layer.scores.assign(rng.normal(size=layer.scores.shape))
    model.get_layer("depthwise").keep_fraction.assign(0.3)
    model.get_layer("output").beta.assign(7.5)
    model(np.ones((1, 6, 6, 2), "float32"), training=True)  # fills ever_selected


def _state(model):
    return {v.path: np.array(v.numpy()) for v in model.weights}


def test_masks_scores_and_rule_state_survive_keras_save_and_load(tmp_path):
    model = _mixed_model()
    _perturb_state(model)
    x = np.random.default_rng(9).normal(size=(5, 6, 6, 2)).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)

    assert [type(layer) for layer in masked_layers(loaded)] == [
        MaskedConv2D, MaskedDepthwiseConv2D, MaskedDense]
    assert type(loaded.get_layer("depthwise").mask_rule) is TopKScores
    assert loaded.get_layer("depthwise").mask_rule.keep_fraction == 0.4
    assert loaded.get_layer("output").mask_rule.initial_beta == 2.0
    before, after = _state(model), _state(loaded)
    assert sorted(before) == sorted(after)
    assert any(path.endswith("ever_selected") for path in after)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert float(loaded.get_layer("depthwise").keep_fraction.numpy()) == 0.3
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_masks_scores_and_rule_state_survive_a_tf_checkpoint(tmp_path):
    model = _mixed_model()
    _perturb_state(model)
    saved = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    other = _mixed_model()  # fresh variables, different values
    assert any(not np.array_equal(a, b) for a, b in
               zip(_state(model).values(), _state(other).values()))
    tf.train.Checkpoint(model=other).restore(saved).assert_existing_objects_matched()
    before, after = _state(model), _state(other)
    assert sorted(before) == sorted(after)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    x = np.random.default_rng(10).normal(size=(5, 6, 6, 2)).astype("float32")
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))


def _sigmoid_dense():
    layer = MaskedDense(3, mask_rule=SigmoidScores(2.0), use_bias=False)
    layer.build((None, 4))
    rng = np.random.default_rng(11)
    layer.scores.assign(rng.normal(size=(4, 3)))
    layer.raw_kernel.assign(rng.normal(size=(4, 3)))
    return layer


def test_forward_mask_reuses_the_traced_forward_pass_mask_and_its_gradient_path():
    x = np.random.default_rng(12).normal(size=(2, 4)).astype("float32")

    def loss_and_grad(mask_of):
        layer = _sigmoid_dense()

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(x, training=True)) + tf.reduce_sum(mask_of(layer))
            return loss, tape.gradient(loss, layer.scores.value)

        graph = step.get_concrete_function().graph
        sigmoids = sum(op.type == "Sigmoid" for op in graph.get_operations())
        loss, grad = step()
        return loss.numpy(), grad.numpy(), sigmoids

    reused = loss_and_grad(lambda layer: layer.forward_mask(training=True))
    fresh = loss_and_grad(lambda layer: layer.effective_mask(training=True))
    assert (reused[2], fresh[2]) == (1, 2)  # σ(β·s) computed once instead of twice
    np.testing.assert_allclose(reused[0], fresh[0], rtol=1e-6)
    np.testing.assert_allclose(reused[1], fresh[1], rtol=1e-6)


def test_forward_mask_is_computed_afresh_eagerly_or_for_another_training_flag():
    layer = _sigmoid_dense()
    x = np.ones((1, 4), "float32")
    layer(x, training=True)
    layer.beta.assign(5.0)  # eagerly nothing is cached: the mask follows the new β
    expected = tf.sigmoid(5.0 * layer.scores.value).numpy()
    np.testing.assert_allclose(layer.forward_mask().numpy(), expected, rtol=1e-6)

    @tf.function
    def sigmoids_for(training):
        layer(x, training=True)
        layer.forward_mask(training=training)
        return 0

    graph = sigmoids_for.get_concrete_function(False).graph
    assert sum(op.type == "Sigmoid" for op in graph.get_operations()) == 2


def test_dense_variables_leave_out_masks_scores_and_rule_state():
    layer = MaskedDense(3, mask_rule=TopKScores(0.5), name="fc")
    network = keras.Sequential([keras.Input((4,)), layer, keras.layers.BatchNormalization()])
    assert {v.name for v in layer.mask_state} == {"mask", "scores",  # and TopKScores' state:
                                                  "keep_fraction", "ever_selected"}
    assert mask_state_ids(network) == {id(v) for v in layer.mask_state}
    assert [v.name for v in dense_variables(network)] == [
        "kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"]
    assert [v.name for v in dense_variables(layer)] == ["kernel", "bias"]
