"""Mask rules: top-k counts and selection, straight-through and sigmoid gradients, binary masks."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.errors import ConfigError
from tf_lottery.layers import (FixedMask, MaskedConv2D, MaskedDense, SigmoidScores, TopKScores,
                               get_rule, keep_count)

# The hand-computed 2x3 example: |s| ranks 0.9 > 0.7 > 0.5 > 0.3 > 0.2 > 0.1.
SCORES = np.array([[0.1, -0.9, 0.3],
                   [0.5, -0.2, 0.7]], "float32")
RAW_KERNEL = np.array([[1.0, 2.0, 3.0],
                       [4.0, 5.0, 6.0]], "float32")


def _dense(rule, scores=SCORES):
    layer = MaskedDense(scores.shape[1], mask_rule=rule, use_bias=False)
    layer.build((None, scores.shape[0]))
    layer.scores.assign(scores)
    layer.raw_kernel.assign(RAW_KERNEL if scores.shape == RAW_KERNEL.shape
                            else np.ones(scores.shape, "float32"))
    return layer


@pytest.mark.parametrize("keep_fraction,n,kept", [
    (0.3, 10, 3),     # 0.3*10 = 3.0000000000000004 in floating point: still 3
    (0.7, 10, 7),     # 7.000000000000001
    (0.1, 30, 3),     # 3.0000000000000004
    (0.25, 10, 3),    # ceil(2.5)
    (0.5, 3, 2),      # ceil(1.5)
    (0.001, 10, 1),   # ceil(0.01): never rounds a positive fraction down to nothing
    (1.0, 7, 7),
    (0.0, 9, 0),
])
def test_keep_count_rounds_up_after_removing_float_noise(keep_fraction, n, kept):
    assert int(keep_count(keep_fraction, n)) == kept


@pytest.mark.parametrize("keep_fraction,shape,kept", [
    (0.3, (2, 5), 3), (0.5, (2, 3), 3), (0.25, (2, 5), 3), (0.05, (4, 5), 1), (1.0, (3, 4), 12)])
def test_top_k_keeps_exactly_k_edges_with_the_largest_absolute_scores(keep_fraction, shape, kept):
    scores = np.random.default_rng(0).normal(size=shape).astype("float32")
    layer = _dense(TopKScores(keep_fraction), scores)
    mask = layer.binary_mask().numpy()
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert mask.sum() == kept
    if kept < mask.size:
        assert np.abs(scores)[mask == 1].min() > np.abs(scores)[mask == 0].max()
    # The forward pass applies that same mask.
    np.testing.assert_array_equal(layer.effective_mask(training=False).numpy(), mask)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel),
                                  layer.raw_kernel.numpy() * mask)


def test_top_k_hand_computed_2x3_example_with_straight_through_gradient():
    layer = _dense(TopKScores(0.5))  # k = ceil(0.5 * 6) = 3
    expected = np.array([[0, 1, 0],
                         [1, 0, 1]], "float32")  # |s| = 0.9, 0.5, 0.7
    np.testing.assert_array_equal(layer.binary_mask().numpy(), expected)

    # Gradient of L = sum(m * C): straight-through dh/d|s| = I, so dL/ds = C ⊙ sign(s).
    upstream = np.array([[0.3, -1.0, 2.0], [4.0, 0.5, -0.7]], "float32")
    with tf.GradientTape() as tape:
        mask = layer.effective_mask(training=True)
        loss = tf.reduce_sum(mask * upstream)
    np.testing.assert_array_equal(mask.numpy(), expected)
    np.testing.assert_array_equal(tape.gradient(loss, layer.scores.value).numpy(),
                                  upstream * np.sign(SCORES))

    # Through the layer: y = x·(W ⊙ m), L = sum(y ⊙ u), so dL/dm = W ⊙ (xᵀu), passed to |s|.
    x = np.array([[1.0, 2.0]], "float32")
    u = np.array([[1.0, -1.0, 2.0]], "float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) * u)
    assert float(loss) == 30.0  # W ⊙ m = [[0, 2, 0], [4, 0, 6]], y = [8, 2, 12]
    dl_dmask = np.array([[1 * 1, 2 * -1, 3 * 2],
                         [4 * 2, 5 * -2, 6 * 4]], "float32")
    np.testing.assert_array_equal(tape.gradient(loss, layer.scores.value).numpy(),
                                  dl_dmask * np.sign(SCORES))


def test_top_k_chooses_only_allowed_edges_and_counts_allowed_edges():
    layer = _dense(TopKScores(0.75))
    allowed = np.array([[1, 1, 0],
                        [0, 1, 1]], "float32")
    layer.mask.assign(allowed)
    # k = ceil(0.75 * 4 allowed) = 3; the allowed |s| are 0.1, 0.9, 0.2, 0.7, so 0.1 is dropped
    # although the disallowed 0.5 and 0.3 are larger than the chosen 0.2.
    expected = np.array([[0, 1, 0],
                         [0, 1, 1]], "float32")
    np.testing.assert_array_equal(layer.binary_mask().numpy(), expected)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer.effective_mask(training=True) * 2.0)
    np.testing.assert_array_equal(tape.gradient(loss, layer.scores.value).numpy(),
                                  2.0 * allowed * np.sign(SCORES))


def test_top_k_keep_fraction_is_a_variable_changing_k_without_retracing():
    scores = np.random.default_rng(1).normal(size=(4, 5)).astype("float32")
    layer = _dense(TopKScores(0.5), scores)
    traces = []

    @tf.function
    def kept():
        traces.append(1)
        return tf.reduce_sum(layer.binary_mask())

    assert int(kept()) == 10
    layer.keep_fraction.assign(0.3)
    assert int(kept()) == 6
    layer.keep_fraction.assign(0.05)
    assert int(kept()) == 1
    assert len(traces) == 1


def test_ever_selected_is_the_or_of_masks_used_in_training_forward_passes():
    layer = _dense(TopKScores(1 / 3))  # k = 2 of 6
    x = np.ones((1, 2), "float32")
    seen = np.zeros((2, 3), "float32")
    for step, scores in enumerate([SCORES, -SCORES[::-1], np.roll(SCORES, 1, axis=1)]):
        layer.scores.assign(scores)
        layer(x, training=True)
        seen = np.maximum(seen, layer.binary_mask().numpy())
        np.testing.assert_array_equal(layer.ever_selected.numpy(), seen, err_msg=f"step {step}")
    assert 2 < seen.sum() < 6  # the passes chose different edges but not all of them
    # Forward passes outside training change nothing.
    layer.scores.assign(np.array([[9, 0, 0], [0, 0, 9]], "float32") * (1 - seen) + 0.01)
    layer(x, training=False)
    layer(x)
    np.testing.assert_array_equal(layer.ever_selected.numpy(), seen)


def test_sigmoid_scores_mask_is_sigmoid_of_beta_s_times_mask():
    layer = _dense(SigmoidScores(initial_beta=2.5))
    allowed = np.array([[1, 0, 1], [1, 1, 0]], "float32")
    layer.mask.assign(allowed)
    expected = allowed / (1 + np.exp(-2.5 * SCORES))
    np.testing.assert_allclose(layer.effective_mask(training=True).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.kernel), RAW_KERNEL * expected,
                               rtol=1e-6)
    x = np.array([[0.5, -2.0]], "float32")
    np.testing.assert_allclose(layer(x).numpy(), x @ (RAW_KERNEL * expected), rtol=1e-5)
    # beta is a variable: raising the temperature sharpens the same layer's mask.
    layer.beta.assign(40.0)
    sharp = layer.effective_mask().numpy()
    np.testing.assert_allclose(sharp, allowed / (1 + np.exp(-40.0 * SCORES)), rtol=1e-5)
    # Its ticket is 1[s > 0] * mask.
    np.testing.assert_array_equal(layer.binary_mask().numpy(),
                                  (SCORES > 0).astype("float32") * allowed)


def test_sigmoid_scores_at_zero_are_pruned_in_the_ticket_at_any_beta():
    # b(0) = 0, as the CS authors' code `(s > 0)`; the soft mask σ(β·0) stays 1/2
    scores = np.array([[0.0, -0.0, 1e-30], [-1e-30, 0.0, 5.0]], "float32")
    layer = _dense(SigmoidScores(initial_beta=1.0), scores)
    for beta in (1.0, 100.0, 1e6):
        layer.beta.assign(beta)
        np.testing.assert_array_equal(layer.binary_mask().numpy(), [[0, 0, 1], [0, 0, 1]])
        soft = layer.effective_mask(training=True).numpy()
        np.testing.assert_array_equal(soft[scores == 0], 0.5)


def test_sigmoid_scores_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(3, 4))
    layer = MaskedDense(4, mask_rule=SigmoidScores(1.7), dtype="float64")
    layer.build((None, 3))
    layer.scores.assign(scores)
    layer.mask.assign(np.array([[1, 1, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1]], "float64"))
    x = rng.normal(size=(5, 3))

    def loss():
        return tf.reduce_sum(tf.tanh(layer(x, training=True)) ** 2)

    with tf.GradientTape() as tape:
        value = loss()
    grad = tape.gradient(value, layer.scores.value).numpy()
    numeric = np.zeros_like(scores)
    eps = 1e-6
    for index in np.ndindex(scores.shape):
        for sign in (1, -1):
            shifted = scores.copy()
            shifted[index] += sign * eps
            layer.scores.assign(shifted)
            numeric[index] += sign * float(loss()) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    assert np.all(grad[layer.mask.numpy() == 0] == 0)
    assert np.count_nonzero(grad) == int(layer.mask.numpy().sum())


def test_fixed_mask_binary_mask_is_the_mask_variable():
    layer = MaskedConv2D(2, 3, mask_rule=FixedMask())
    layer.build((None, 5, 5, 1))
    assert layer.scores is None  # a fixed mask needs no scores
    mask = (np.arange(18).reshape(3, 3, 1, 2) % 3 == 0).astype("float32")
    layer.mask.assign(mask)
    np.testing.assert_array_equal(layer.binary_mask().numpy(), mask)


def test_get_rule_names_and_unknown_names():
    assert isinstance(get_rule(None), FixedMask)
    assert isinstance(get_rule("topk"), TopKScores)
    rule = get_rule(keras.saving.serialize_keras_object(TopKScores(0.2)))
    assert isinstance(rule, TopKScores) and rule.keep_fraction == 0.2
    with pytest.raises(ConfigError, match="unknown mask rule"):
        get_rule("top_k")
    with pytest.raises(ConfigError):
        TopKScores(keep_fraction=1.5)




def test_top_k_training_passes_keep_their_threshold_as_a_hint_outside_the_weights():
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(100, 90)).astype("float32")  # > 8192 edges: the counting search
    layer = _dense(TopKScores(0.3), scores)
    hint = layer._top_k_hint
    assert all(w.name != "top_k_hint" for w in layer.weights)  # neither saved nor restored
    kept = int(keep_count(0.3, scores.size))
    for step in range(3):
        mask = layer.effective_mask(training=True).numpy()
        assert mask.sum() == kept
        threshold = tf.bitcast(hint, tf.float32).numpy()  # the hint: a threshold on |s|
        assert np.sum(np.abs(scores) >= threshold) == kept
        assert np.abs(scores)[mask == 1].min() > np.abs(scores)[mask == 0].max()
        scores = scores + rng.normal(size=scores.shape).astype("float32") * 0.05
        layer.scores.assign(scores)
    hint.assign(12345)  # a stale hint gives the same mask
    np.testing.assert_array_equal(layer.effective_mask(training=True).numpy(),
                                  layer.binary_mask().numpy())
