"""Channel groups (sparsity.channel_graph) and channel pruning (sparsity.channels), by hand."""
import keras
import numpy as np
import pytest

from tf_lottery import masks as masks_lib
from tf_lottery.errors import ConfigError
from tf_lottery.models.sparsify import sparsify
from tf_lottery.sparsity.channel_graph import channel_groups
from tf_lottery.sparsity.channels import (GradualChannelPruning, SlimmingPenalty, channel_fraction,
                                          prune_channels)
from tf_lottery.sparsity.schedules import ConstantSparsity
from tf_lottery.training.sparse_model import SparseModel


def branching_net():
    """c1 -> bn1 -> relu -> {c2, c3} added -> depthwise -> concat with c4 -> pool -> flatten ->
    output: every case the channel graph follows."""
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    a = keras.layers.ReLU(name="relu")(x)
    y = keras.layers.Conv2D(4, 1, name="c2")(a)
    z = keras.layers.Add(name="add")([y, keras.layers.Conv2D(4, 1, name="c3")(a)])
    d = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(z)
    cat = keras.layers.Concatenate(name="cat")([d, keras.layers.Conv2D(3, 1, name="c4")(a)])
    x = keras.layers.MaxPooling2D(4, name="pool")(cat)
    x = keras.layers.Flatten(name="flatten")(x)
    return sparsify(keras.Model(inputs, keras.layers.Dense(5, name="output")(x)))


def _randomise_norms(model, seed=0):
    """γ and the moving variance in [0.5, 1.5], β and the moving mean in [-0.2, 0.2]."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.uniform(-.2, .2, beta.shape),
                               rng.uniform(-.2, .2, mean.shape),
                               rng.uniform(0.5, 1.5, variance.shape)])


def test_groups_follow_additions_depthwise_concatenation_and_flatten():
    groups = {g.name: g for g in channel_groups(branching_net())}
    assert sorted(groups) == ["c1", "c2", "c4", "output"]
    c1, c2, c4 = groups["c1"], groups["c2"], groups["c4"]
    assert [layer.name for layer, _ in c1.producers] == ["c1"]
    assert sorted(c.layer.name for c in c1.consumers) == ["c2", "c3", "c4"]
    assert [layer.name for layer in c1.channel_layers] == ["bn1"]
    # the addition ties c2 and c3; the depthwise layer passes their channels through
    assert sorted(layer.name for layer, _ in c2.producers) == ["c2", "c3"]
    assert [layer.name for layer in c2.channel_layers] == ["dw"]
    # after concat + 2x2 pool + flatten, channel c of c2 is row p*7 + c, of c4 row p*7 + 4 + c
    (dense_c2,), (dense_c4,) = c2.consumers, c4.consumers
    assert dense_c2.layer.name == dense_c4.layer.name == "output"
    assert dense_c2.rows([1]).tolist() == [1, 8, 15, 22]
    assert dense_c4.rows([0, 2]).tolist() == [4, 6, 11, 13, 18, 20, 25, 27]
    assert all(g.prunable for g in (c1, c2, c4))
    assert not groups["output"].prunable and "output" in groups["output"].reason


def test_a_group_touching_an_excluded_or_unknown_layer_is_not_prunable():
    model = branching_net()
    groups = {g.name: g for g in channel_groups(
        model, prunable=[n for n in masks_lib.get_masks(model) if n != "c3"])}
    assert not groups["c2"].prunable and "c3 writes" in groups["c2"].reason  # c2 + c3 added
    assert groups["c1"].prunable  # c3 still loses the rows of c1's removed channels
    masks = prune_channels(model, 0.5, exclude=["c3"])
    assert "c2" not in masks or masks["c2"].any(axis=(0, 1, 2)).all()  # c2's channels stay
    assert masks["c3"].any(axis=(0, 1, 3)).sum() == 2 and masks["c3"].any(axis=(0, 1, 2)).all()
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, name="fc")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    plain = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    (fc, _) = channel_groups(plain)
    assert not fc.prunable and "ln" in fc.reason


def _dense_pair(columns):
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="fc1")(inputs)
    model = sparsify(keras.Model(inputs, keras.layers.Dense(2, name="fc2")(x)))
    model.get_layer("fc1").raw_kernel.assign(np.array(columns, np.float32).T)
    return model


# columns of fc1: L1 norms 3, 2.5, 4, 6; L2 norms 1.73, 2.5, 4, 3.46
COLUMNS = [[1, 1, 1], [2.5, 0, 0], [4, 0, 0], [2, 2, 2]]


@pytest.mark.parametrize("criterion, removed", [("l1", 1), ("l2", 0)])
def test_the_lowest_filter_norm_is_removed_with_the_rows_that_read_it(criterion, removed):
    model = _dense_pair(COLUMNS)
    masks = prune_channels(model, 0.25, criterion)  # round(0.25 * 4) = 1 channel
    keep = np.ones(4)
    keep[removed] = 0
    np.testing.assert_array_equal(masks["fc1"], np.tile(keep, (3, 1)))
    np.testing.assert_array_equal(masks["fc2"], np.tile(keep[:, None], (1, 2)))


def test_ties_remove_the_later_channel_and_pruned_channels_stay_pruned():
    model = _dense_pair([[1, 0, 0], [2, 0, 0], [1, 0, 0], [3, 0, 0]])
    masks_lib.set_masks(model, prune_channels(model, 0.25, "l1"))
    assert model.get_layer("fc1").mask.numpy()[0].tolist() == [1, 1, 0, 1]  # tie 0/2: 2 goes
    # next round: 0.5 of the 3 remaining -> round-half-up(1.5) = 2 more, channel 2 not again
    masks = prune_channels(model, 0.5, "l1")
    assert masks["fc1"][0].tolist() == [0, 0, 0, 1]
    assert channel_fraction(model) == pytest.approx(3 / 4)  # the model's masks, not `masks`


def test_bn_gamma_global_ranks_all_groups_and_keeps_one_channel_in_each():
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Conv2D(2, 1, name="a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.Conv2D(3, 1, name="b")(x)
    x = keras.layers.BatchNormalization(name="bn_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = sparsify(keras.Model(inputs, keras.layers.Dense(2, name="out")(x)))
    model.get_layer("bn_a").gamma.assign([0.1, 0.2])
    model.get_layer("bn_b").gamma.assign([-0.9, 0.3, 0.05])
    # 0.6 of 5 channels = 3 lowest |γ|: 0.05 (b2), 0.1 (a0), 0.2 (a1); group a keeps a1
    masks = prune_channels(model, 0.6, "bn_gamma", scope="global")
    assert masks["a"][0, 0, 0].tolist() == [0, 1]
    assert masks["b"][0, 0].sum(axis=0).tolist() == [1, 1, 0]  # rows of a0 zero too
    assert masks["b"][0, 0, 0].tolist() == [0, 0, 0] and masks["out"][:, 0].tolist() == [1, 1, 0]
    penalty = SlimmingPenalty(1e-2)(model)
    assert float(penalty) == pytest.approx(1e-2 * (0.1 + 0.2 + 0.9 + 0.3 + 0.05))


def test_the_gradual_updater_keeps_k_channels_per_group_in_the_training_step():
    rng = np.random.default_rng(0)
    network = branching_net()
    _randomise_norms(network)
    model = SparseModel(network)
    updater = GradualChannelPruning(ConstantSparsity(0.5, begin_step=0, frequency=1), "l2")
    model.add_mask_updater(updater)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    x = rng.normal(size=(16, 8, 8, 2)).astype("float32")
    model.fit(x, rng.integers(0, 5, 16), batch_size=8, epochs=1, verbose=0)
    masks = masks_lib.get_masks(network)
    # k = round(0.5 * C) channels of each group: c1 2/4, (c2, c3) 2/4, c4 round(1.5) = 2/3
    assert masks["c1"][0, 0, 0].tolist().count(1.0) == 2
    assert masks["c2"].any(axis=(0, 1, 2)).sum() == masks["c3"].any(axis=(0, 1, 2)).sum() == 2
    assert masks["c4"].any(axis=(0, 1, 2)).sum() == 2
    np.testing.assert_array_equal(masks["c2"].any(axis=(0, 1, 2)),
                                  masks["c3"].any(axis=(0, 1, 2)))  # the addition ties them
    np.testing.assert_array_equal(masks["dw"].any(axis=(0, 1, 3)), masks["c2"].any(axis=(0, 1, 2)))
    # the kept channels of c1 are its largest filter L2 norms at the last update (its own
    # input rows are whole: the input is not pruned)
    kept = masks["c1"][0, 0, 0] > 0
    assert masks["c2"][0, 0].any(axis=1).tolist() == kept.tolist()


def test_bad_channel_pruning_input_is_one_config_error():
    with pytest.raises(ConfigError, match="criterion"):
        prune_channels(branching_net(), 0.5, "l3")
    inputs = keras.Input((3,))
    only_output = sparsify(keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs)))
    with pytest.raises(ConfigError, match=r"no channel group .*\(out: it reaches"):
        prune_channels(only_output, 0.5)
    with pytest.raises(ConfigError, match="bn_gamma.*BatchNormalization.*has none"):
        prune_channels(_dense_pair(COLUMNS), 0.5, "bn_gamma")
    with pytest.raises(ConfigError, match="strength"):
        SlimmingPenalty(-1.0)
