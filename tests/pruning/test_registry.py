import numpy as np
import pytest

from tests.pruning.tiny import conv_net
from tf_lottery.errors import ConfigError
from tf_lottery.masks import set_masks
from tf_lottery.pruning import (BATCH_CRITERIA, CRITERIA, get_criterion, grasp_masks,
                                magnitude_masks, prune_count, random_masks, snip_masks,
                                synflow_masks)


def test_names_and_typos():
    assert get_criterion("magnitude") is magnitude_masks
    assert get_criterion("random") is random_masks
    assert get_criterion("snip") is snip_masks
    assert get_criterion("grasp") is grasp_masks
    assert get_criterion("synflow") is synflow_masks
    with pytest.raises(ConfigError, match="did you mean 'synflow'"):
        get_criterion("synflw")
    with pytest.raises(ConfigError, match="choose one of"):
        get_criterion("xyz")


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_every_criterion_prunes_only_unpruned_weights_to_the_requested_count(name):
    model = conv_net()
    rng = np.random.default_rng(4)
    start = {layer: (rng.random(model.get_layer(layer).mask.shape) > 0.3).astype(np.float32)
             for layer in ("conv", "fc", "out")}
    set_masks(model, start)
    criterion = get_criterion(name)
    if name in BATCH_CRITERIA:
        x = rng.normal(size=(6, 4, 4, 1)).astype(np.float32)
        masks = criterion(model, x, rng.integers(0, 3, size=6), prune_fraction=0.3)
    else:
        masks = criterion(model, prune_fraction=0.3)
    assert set(masks) == set(start)
    for layer, mask in masks.items():
        assert mask.dtype == np.float32 and mask.shape == start[layer].shape
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert np.all(mask <= start[layer]), f"{name} revived a pruned weight of {layer}"
    if name in ("magnitude", "random"):  # layer-wise by default
        for layer, mask in masks.items():
            remaining = int(start[layer].sum())
            assert int(mask.sum()) == remaining - prune_count(0.3, remaining)
    else:  # global
        remaining = sum(int(m.sum()) for m in start.values())
        assert sum(int(m.sum()) for m in masks.values()) == remaining - prune_count(0.3, remaining)
    # the model's own masks are untouched
    assert all(np.array_equal(model.get_layer(n).mask.numpy(), start[n]) for n in start)
