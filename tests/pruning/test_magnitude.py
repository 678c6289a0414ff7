import numpy as np
import pytest

from tests.pruning.tiny import conv_net, dense_net, set_kernel
from tf_lottery.errors import ConfigError
from tf_lottery.masks import set_masks
from tf_lottery.pruning import frankle_carbin_fractions, magnitude_masks, prune_count


def test_layerwise_removes_smallest_unpruned_and_never_revives():
    model = dense_net([4, 2], input_dim=2)
    set_kernel(model, "d0", [[0.1, -0.8, 0.3, 0.05], [0.9, -0.2, 0.6, -0.7]],
               mask=[[1, 1, 1, 0], [0, 1, 1, 1]])
    set_kernel(model, "d1", [[0.5, -0.4], [0.3, 0.2], [-0.1, 0.6], [0.7, 0.8]])
    masks = magnitude_masks(model, 0.5)
    # d0: 6 unpruned {.1,.8,.3,.2,.6,.7}: remove 3 smallest (.1,.2,.3); the pruned .05 and .9
    # stay pruned (the .9 is not revived).
    np.testing.assert_array_equal(masks["d0"], [[0, 1, 0, 0], [0, 0, 1, 1]])
    # d1: 8 unpruned, remove 4 smallest (.1,.2,.3,.4)
    np.testing.assert_array_equal(masks["d1"], [[1, 0], [0, 0], [0, 1], [1, 1]])
    assert all(m.dtype == np.float32 for m in masks.values())


def test_global_ranks_all_layers_together():
    model = dense_net([2, 2], input_dim=2)
    set_kernel(model, "d0", [[0.1, 0.2], [0.3, 0.4]])
    set_kernel(model, "d1", [[-5.0, 6.0], [7.0, 0.35]], mask=[[1, 1], [1, 0]])
    masks = magnitude_masks(model, 0.5, scope="global")
    # 7 unpruned pooled, round-half-up(3.5) = 4 removed: .1 .2 .3 .4 (d1's pruned .35 is out)
    np.testing.assert_array_equal(masks["d0"], [[0, 0], [0, 0]])
    np.testing.assert_array_equal(masks["d1"], [[1, 1], [1, 0]])
    layerwise = magnitude_masks(model, 0.5)
    np.testing.assert_array_equal(layerwise["d0"], [[0, 0], [1, 1]])
    # d1: 3 unpruned, round-half-up(1.5) = 2 removed: 5 and 6
    np.testing.assert_array_equal(layerwise["d1"], [[0, 0], [1, 0]])


def test_ties_are_deterministic_and_exclude_leaves_layer_out():
    model = dense_net([3, 2], input_dim=1)
    set_kernel(model, "d0", [[0.5, -0.5, 0.5]])
    masks = magnitude_masks(model, 0.4, exclude=("d1",))
    assert set(masks) == {"d0"}
    # three tied |0.5|: round-half-up(1.2) = 1 removed, the last position
    np.testing.assert_array_equal(masks["d0"], [[1, 1, 0]])
    np.testing.assert_array_equal(magnitude_masks(model, 0.4, exclude=("d1",))["d0"],
                                  masks["d0"])


def test_imp_rounds_follow_the_rounding_rule_and_nest():
    model = conv_net()
    fractions = frankle_carbin_fractions(model)
    assert fractions == {"conv": 0.15, "fc": 0.2, "out": 0.1}
    previous = {layer: np.ones(model.get_layer(layer).mask.shape, np.float32)
                for layer in fractions}
    for _ in range(4):
        masks = magnitude_masks(model, 0.2, layer_prune_fractions=fractions)
        for name, mask in masks.items():
            remaining = int(previous[name].sum())
            assert int(mask.sum()) == remaining - prune_count(fractions[name], remaining)
            assert np.all(mask <= previous[name])  # nested: nothing revived
            assert set(np.unique(mask)) <= {0.0, 1.0}
        set_masks(model, masks)
        previous = masks


def test_frankle_carbin_output_layer_and_errors():
    model = conv_net()
    assert frankle_carbin_fractions(model, output_layer_name="fc")["fc"] == pytest.approx(0.1)
    assert frankle_carbin_fractions(model, exclude=("out",)) == {"conv": 0.15, "fc": 0.1}
    with pytest.raises(ConfigError):
        frankle_carbin_fractions(model, output_layer_name="nope")
    with pytest.raises(ConfigError):
        magnitude_masks(model, 0.2, scope="global", layer_prune_fractions={"fc": 0.1})
