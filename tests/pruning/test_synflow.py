import numpy as np
import pytest

from tests.pruning.tiny import conv_net, dense_net, set_kernel
from tf_lottery.pruning import prune_count, synflow_masks


def _flow(w0, b0, w1, b1, m0, m1):
    """R = 1ᵀ f(1; |θ| ⊙ μ) for the linear net x -> x W0 + b0 -> (.) W1 + b1."""
    hidden = np.ones(w0.shape[0]) @ (np.abs(w0) * m0) + np.abs(b0)
    return float(np.sum(hidden @ (np.abs(w1) * m1) + np.abs(b1)))


def _brute_force_synflow(w0, b0, w1, b1, prune_fraction, iterations):
    """Reference SynFlow: R is linear in each single weight, so |θ ∂R/∂θ| is exactly the drop
    in R when that one weight is removed; prune with the same schedule, lowest first."""
    masks = [np.ones_like(w0), np.ones_like(w1)]
    start = w0.size + w1.size
    for i in range(1, iterations + 1):
        fraction = 1 - (1 - prune_fraction) ** (i / iterations)
        fraction = prune_fraction if i == iterations else fraction
        target = start - prune_count(fraction, start)
        scores = []
        for layer in range(2):
            for j in range(masks[layer].size):
                dropped = [m.copy() for m in masks]
                dropped[layer].flat[j] = 0
                scores.append(_flow(w0, b0, w1, b1, *masks) - _flow(w0, b0, w1, b1, *dropped))
        flat = np.concatenate([m.ravel() for m in masks])
        alive = np.flatnonzero(flat)
        order = alive[np.argsort(np.asarray(scores)[alive], kind="stable")]
        flat[order[:alive.size - target]] = 0
        masks = [flat[:w0.size].reshape(w0.shape), flat[w0.size:].reshape(w1.shape)]
    return masks


@pytest.mark.parametrize("iterations", [1, 100])
def test_synflow_matches_brute_force_on_two_layer_linear_net(iterations):
    rng = np.random.default_rng(2)
    model = dense_net([3, 2], input_dim=4, use_bias=True)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    w1 = rng.normal(size=(3, 2)).astype(np.float32)
    b0 = np.array([-0.5, 0.2, -1.0], np.float32)
    b1 = np.array([0.3, -0.4], np.float32)
    set_kernel(model, "d0", w0).bias.assign(b0)
    set_kernel(model, "d1", w1).bias.assign(b1)
    masks = synflow_masks(model, 0.6, iterations=iterations)
    want0, want1 = _brute_force_synflow(w0, b0, w1, b1, 0.6, iterations)
    np.testing.assert_array_equal(masks["d0"], want0)
    np.testing.assert_array_equal(masks["d1"], want1)
    assert int(masks["d0"].sum() + masks["d1"].sum()) == 18 - prune_count(0.6, 18)
    # weights, signs and masks are restored
    np.testing.assert_array_equal(model.get_layer("d0").raw_kernel.numpy(), w0)
    np.testing.assert_array_equal(model.get_layer("d0").bias.numpy(), b0)
    assert model.get_layer("d1").mask.numpy().min() == 1.0


def test_iterating_changes_the_answer_on_a_layer_collapse_prone_net():
    # One wide layer of small weights and one narrow layer of large weights: one-shot pruning
    # and 100 iterations give different masks, so the test above would catch a missing loop.
    rng = np.random.default_rng(5)
    model = dense_net([8, 2], input_dim=6)
    set_kernel(model, "d0", rng.uniform(0.1, 1.0, size=(6, 8)))
    set_kernel(model, "d1", rng.uniform(1.0, 3.0, size=(8, 2)))
    once = synflow_masks(model, 0.9, iterations=1)
    many = synflow_masks(model, 0.9)
    assert not all(np.array_equal(once[n], many[n]) for n in once)


def test_data_free_sign_invariant_and_restores_batch_norm():
    model = conv_net(batch_norm=True)
    bn = model.get_layer("bn")
    bn.moving_mean.assign([0.3, -0.2])
    bn.moving_variance.assign([2.0, 0.5])
    before = [v.numpy().copy() for v in model.variables]
    masks = synflow_masks(model, 0.8, iterations=10)
    after = [v.numpy() for v in model.variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    total = sum(m.size for m in masks.values())
    assert int(sum(m.sum() for m in masks.values())) == total - prune_count(0.8, total)
    # Only |θ| matters: flipping every weight's sign gives the same mask.
    for layer in ("conv", "fc", "out"):
        kernel = model.get_layer(layer).raw_kernel
        kernel.assign(-kernel.numpy())
    flipped = synflow_masks(model, 0.8, iterations=10)
    assert all(np.array_equal(masks[n], flipped[n]) for n in masks)
