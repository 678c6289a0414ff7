import numpy as np
import tensorflow as tf

from tests.pruning.tiny import dense_net, set_kernel
from tf_lottery.masks import prunable_layers
from tf_lottery.pruning import grasp_masks, hessian_gradient_product, prune_count


def test_hg_matches_explicit_hessian_of_the_subnetwork_and_mask_removes_highest_score():
    rng = np.random.default_rng(1)
    model = dense_net([3, 2], input_dim=2, use_bias=True, activation="tanh")
    w0 = rng.normal(size=(2, 3)).astype(np.float32)
    w1 = rng.normal(size=(3, 2)).astype(np.float32)
    m0 = np.array([[1, 0, 1], [1, 1, 1]], np.float32)
    m1 = np.array([[1, 1], [1, 1], [0, 1]], np.float32)
    set_kernel(model, "d0", w0, m0)
    set_kernel(model, "d1", w1, m1)
    b0, b1 = (layer.bias.numpy() for layer in prunable_layers(model))
    x = rng.normal(size=(4, 2)).astype(np.float32)
    y = np.array([0, 1, 1, 0])

    # Explicit: loss as a function of the vector of UNPRUNED weights only (pruned ones are 0).
    alive0, alive1 = np.flatnonzero(m0), np.flatnonzero(m1)
    theta = tf.Variable(np.concatenate([w0.ravel()[alive0], w1.ravel()[alive1]]), dtype=tf.float64)

    def loss_of(vec):
        k0 = tf.scatter_nd(alive0[:, None], vec[:alive0.size], [6])
        k1 = tf.scatter_nd(alive1[:, None], vec[alive0.size:], [6])
        h = tf.tanh(x.astype(np.float64) @ tf.reshape(k0, (2, 3)) + b0.astype(np.float64))
        logits = h @ tf.reshape(k1, (3, 2)) + b1.astype(np.float64)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = loss_of(theta)
        g = inner.gradient(loss, theta)
    hessian = outer.jacobian(g, theta).numpy()
    hg = hessian @ g.numpy()

    got = hessian_gradient_product(model, prunable_layers(model), x, y)
    got0, got1 = (t.numpy().ravel() for t in got)
    np.testing.assert_allclose(np.concatenate([got0[alive0], got1[alive1]]), hg,
                               rtol=1e-4, atol=1e-6)
    assert got0[m0.ravel() == 0].tolist() == [0.0] and got1[m1.ravel() == 0].tolist() == [0.0]

    # S = -θ ⊙ Hg; remove round-half-up(0.5·10) = 5 with the HIGHEST S, global.
    score = -theta.numpy() * hg
    removed = np.argsort(-score, kind="stable")[:prune_count(0.5, score.size)]
    keep = np.ones(score.size)
    keep[removed] = 0
    masks = grasp_masks(model, x, y, prune_fraction=0.5)
    np.testing.assert_array_equal(masks["d0"].ravel()[alive0], keep[:alive0.size])
    np.testing.assert_array_equal(masks["d1"].ravel()[alive1], keep[alive0.size:])
    assert masks["d0"].ravel()[m0.ravel() == 0].tolist() == [0.0]
