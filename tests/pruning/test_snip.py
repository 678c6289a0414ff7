import numpy as np
import pytest

from tests.pruning.tiny import dense_net, set_kernel
from tf_lottery.errors import ConfigError
from tf_lottery.layers import MaskedDense
from tf_lottery.pruning import prune_count, snip_masks, snip_scores


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_snip_scores_equal_manual_g_times_w_on_a_linear_model():
    rng = np.random.default_rng(0)
    model = dense_net([3], input_dim=4, use_bias=True)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    mask = np.ones((4, 3), np.float32)
    mask[1, 2] = mask[3, 0] = 0
    layer = set_kernel(model, "d0", w, mask)
    layer.bias.assign([0.1, -0.2, 0.3])
    x = rng.normal(size=(5, 4)).astype(np.float32)
    y = np.array([0, 2, 1, 1, 0])
    # Manual: logits = x (w⊙m) + b; dL/dW = xᵀ(softmax - onehot)/N for the mean CE
    effective = w * mask
    probs = _softmax(x @ effective + np.array([0.1, -0.2, 0.3]))
    grad = x.T @ (probs - np.eye(3)[y]) / len(y)
    expected = np.abs(grad * effective)
    np.testing.assert_allclose(snip_scores(model, x, y)["d0"], expected, rtol=1e-5, atol=1e-7)

    masks = snip_masks(model, x, y, prune_fraction=0.4)
    # 10 unpruned, remove 4 of smallest |g w| among them
    alive = np.flatnonzero(mask.ravel())
    removed = alive[np.argsort(expected.ravel()[alive], kind="stable")[:prune_count(0.4, 10)]]
    want = mask.ravel().copy()
    want[removed] = 0
    np.testing.assert_array_equal(masks["d0"].ravel(), want)


def test_gradient_criteria_refuse_non_fixed_mask_rules():
    import keras
    model = keras.Sequential([keras.Input((3,)), MaskedDense(2, mask_rule="topk", name="t")])
    with pytest.raises(ConfigError):
        snip_masks(model, np.ones((1, 3), np.float32), np.array([0]), 0.5)
