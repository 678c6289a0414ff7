import numpy as np

from tests.pruning.tiny import dense_net, set_kernel
from tf_lottery.pruning import prune_count, random_masks, random_masks_like


def test_random_masks_exact_per_layer_counts_within_unpruned():
    model = dense_net([5, 3], input_dim=4)
    start = np.ones((4, 5), np.float32)
    start[0] = 0  # 5 weights of d0 already pruned: 15 remain
    set_kernel(model, "d0", np.ones((4, 5)), mask=start)
    masks = random_masks(model, 0.3, seed=1)
    assert int(masks["d0"].sum()) == 15 - prune_count(0.3, 15) == 10   # 4.5 -> 5 removed
    assert int(masks["d1"].sum()) == 15 - prune_count(0.3, 15)
    assert np.all(masks["d0"] <= start)
    assert set(np.unique(np.concatenate([m.ravel() for m in masks.values()]))) == {0.0, 1.0}
    again = random_masks(model, 0.3, seed=1)
    other = random_masks(model, 0.3, seed=2)
    assert all(np.array_equal(masks[n], again[n]) for n in masks)
    assert not all(np.array_equal(masks[n], other[n]) for n in masks)


def test_random_masks_like_keeps_layer_densities():
    given = {"a": np.eye(6, dtype=np.float32), "b": np.zeros((3, 3), np.float32)}
    given["b"][0, 0] = 1
    shuffled = random_masks_like(given, seed=3)
    assert {n: int(m.sum()) for n, m in shuffled.items()} == {"a": 6, "b": 1}
    assert shuffled["a"].shape == (6, 6) and shuffled["a"].dtype == np.float32
    assert not np.array_equal(shuffled["a"], given["a"])
    np.testing.assert_array_equal(random_masks_like(given, seed=3)["a"], shuffled["a"])
    # uniform placement: over many seeds every position of "a" gets picked
    hits = sum(random_masks_like(given, seed=s)["a"] for s in range(200))
    assert np.all(hits > 0)
