import keras
import numpy as np
import tensorflow as tf

from tf_lottery.layers import MaskedDense
from tf_lottery.layers.mask_rules import SigmoidScores
from tf_lottery.training.split_optimizer import ScoreSplitOptimizer


def _layer():
    layer = MaskedDense(3, name="fc", mask_rule=SigmoidScores(), score_initializer="zeros")
    layer.build((None, 2))
    return layer


def _grads(layer):
    x = tf.constant([[1.0, -2.0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * tf.constant([[1.0, 2.0, 3.0]]))
    variables = layer.trainable_weights
    return tape.gradient(loss, variables), variables


def test_scores_by_one_optimizer_weights_by_the_other():
    layer = _layer()
    kernel, scores = layer.raw_kernel.numpy(), layer.scores.numpy()
    grads, variables = _grads(layer)
    by_name = {v.name: g.numpy() for g, v in zip(grads, variables)}
    optimizer = ScoreSplitOptimizer(keras.optimizers.Adam(0.01), keras.optimizers.SGD(20.0))
    optimizer.apply_gradients(zip(grads, variables))
    # SGD on s: s − 20·g
    np.testing.assert_allclose(layer.scores.numpy(), scores - 20.0 * by_name["scores"],
                               rtol=1e-5, atol=1e-7)
    # Adam's first step on w: −0.01·g/(|g| + ε), i.e. 0.01 against the gradient's sign
    step = layer.raw_kernel.numpy() - kernel
    moved = np.abs(by_name["kernel"]) > 1e-3
    np.testing.assert_allclose(step[moved], -0.01 * np.sign(by_name["kernel"][moved]), rtol=1e-3)
    assert int(optimizer.iterations) == 1
    assert float(optimizer.learning_rate) == np.float32(0.01)


def test_checkpoint_holds_both_inner_optimizers(tmp_path):
    layer = _layer()
    optimizer = ScoreSplitOptimizer(keras.optimizers.SGD(0.1, momentum=0.9),
                                    keras.optimizers.Adam(0.1))
    grads, variables = _grads(layer)
    optimizer.apply_gradients(zip(grads, variables))
    path = tf.train.Checkpoint(optimizer=optimizer).save(str(tmp_path / "ckpt"))
    state = [v.numpy() for v in optimizer.variables]

    fresh = ScoreSplitOptimizer(keras.optimizers.SGD(0.1, momentum=0.9),
                                keras.optimizers.Adam(0.1))
    fresh.build(variables)
    tf.train.Checkpoint(optimizer=fresh).restore(path).assert_existing_objects_matched()
    restored = [v.numpy() for v in fresh.variables]
    assert len(restored) == len(state) > 4
    for a, b in zip(restored, state):
        np.testing.assert_array_equal(a, b)
