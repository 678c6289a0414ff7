import math

import keras
import numpy as np
import pytest

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.export import to_plain_model
from tf_lottery.layers import (GhostActivation, GhostSkip, KaimingNormal, KaimingUniform,
                               MaskedConv2D, MaskedDense, SigmoidScores, SignedKaimingConstant,
                               TopKScores, ghost_modules, masked_layers)
from tf_lottery.training.ghost_insertion import insert_ghosts
from tf_lottery.training.sparse_model import SparseModel

from tests.export import nets


def _only_keras_layers(model):
    layers = compat.sublayers(model, include_self=True)
    return all(type(layer).__module__.startswith("keras.") for layer in layers)


def _kernels(model):
    """{layer name: kernel} of every Dense/Conv layer, nested ones included."""
    return {layer.name: keras.ops.convert_to_numpy(layer.kernel)
            for layer in compat.sublayers(model)
            if hasattr(layer, "kernel") and not isinstance(layer, keras.Model)}


@pytest.mark.parametrize("rule", ["fixed", "topk"])
def test_kernels_are_raw_kernel_times_binary_mask_and_outputs_match(rule):
    network = nets.conv_net(rule=TopKScores(0.3) if rule == "topk" else None)
    nets.random_masks(network)
    nets.train(network)
    plain = to_plain_model(network)

    assert _only_keras_layers(plain)
    names = [w.name for w in plain.weights]
    assert not {"mask", "scores", "keep_fraction", "ever_selected"} & set(names)
    kernels = _kernels(plain)
    for layer in masked_layers(network):
        raw = layer.raw_kernel.numpy()
        mask = layer.binary_mask().numpy()
        assert 0 < mask.sum() < mask.size
        assert np.all(raw != 0)  # so the folded zeros are exactly the pruned weights
        np.testing.assert_array_equal(kernels[layer.name], raw * mask)
        assert np.count_nonzero(kernels[layer.name] == 0) == np.count_nonzero(mask == 0)
    x, _ = nets.batch()
    np.testing.assert_allclose(plain(x), network(x), atol=1e-6)
    # BN statistics moved in training and were copied
    np.testing.assert_array_equal(plain.get_layer("bn1").moving_mean.numpy(),
                                  network.get_layer("bn1").moving_mean.numpy())
    assert np.any(network.get_layer("bn1").moving_mean.numpy() != 0)


def test_copy_shares_no_variable_with_the_ticket():
    network = nets.conv_net()
    plain = to_plain_model(network)
    assert not {id(v) for v in plain.weights} & {id(v) for v in network.weights}
    network.get_layer("fc").raw_kernel.assign(np.zeros(network.get_layer("fc").mask.shape))
    assert np.any(plain.get_layer("fc").kernel.numpy() != 0)


def test_sigmoid_scores_fold_the_ticket_mask_not_the_soft_one():
    network = nets.conv_net(rule=SigmoidScores(initial_beta=1.0))
    plain = to_plain_model(network)
    layer = network.get_layer("fc")
    expected = layer.raw_kernel.numpy() * (layer.scores.numpy() > 0)
    np.testing.assert_array_equal(plain.get_layer("fc").kernel.numpy(), expected)


def test_nested_sequential_and_functional_and_sparse_model_wrapper():
    inner_functional_in = keras.Input((6,))
    inner_functional = keras.Model(
        inner_functional_in, MaskedDense(4, name="f_dense")(inner_functional_in), name="inner_f")
    inner_sequential = keras.Sequential(
        [keras.Input((5,)), MaskedDense(6, activation="relu", name="s_dense"), inner_functional,
         keras.layers.Dropout(0.5, name="drop")], name="inner_s")
    inputs = keras.Input((5,), name="x")
    outputs = MaskedDense(2, name="head")(inner_sequential(inputs))
    network = keras.Model(inputs, outputs, name="outer")
    nets.random_masks(network)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")

    plain = to_plain_model(SparseModel(network))
    assert _only_keras_layers(plain)
    assert isinstance(plain.get_layer("inner_s"), keras.Sequential)
    assert isinstance(plain.get_layer("inner_s").get_layer("inner_f"), keras.Model)
    kernels = _kernels(plain)
    for layer in masked_layers(network):
        np.testing.assert_array_equal(kernels[layer.name],
                                      layer.raw_kernel.numpy() * layer.mask.numpy())
    np.testing.assert_allclose(plain(x), network(x), atol=1e-6)
    top_sequential = keras.Sequential([keras.Input((5,)), MaskedDense(3, name="d")])
    assert _only_keras_layers(to_plain_model(top_sequential))


def test_faded_ghosts_are_removed_and_active_ones_refused():
    ghosted = insert_ghosts(nets.conv_net(), initial_beta=1.0, initial_alpha=0.5)
    activations, skips = ghost_modules(ghosted)
    assert activations and skips
    with pytest.raises(ConfigError, match="relu1_ghost"):
        to_plain_model(ghosted)
    for layer in activations:
        layer.set_beta(math.inf)
    with pytest.raises(ConfigError, match="ghost_skip"):  # ReLUs on, but α still 0.5
        to_plain_model(ghosted)
    for layer in skips:
        layer.alpha.assign(0.0)

    plain = to_plain_model(ghosted)
    layers = compat.sublayers(plain)
    assert not [l for l in layers if isinstance(l, (GhostActivation, GhostSkip))]
    assert sum(isinstance(l, keras.layers.ReLU) for l in layers) == 2
    assert _only_keras_layers(plain)
    x, _ = nets.batch()
    np.testing.assert_allclose(plain(x), ghosted(x), atol=1e-6)


def test_subclassed_network_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = MaskedDense(2)

        def call(self, x):
            return self.dense(x)

    network = Net()
    network(np.zeros((1, 3), "float32"))
    with pytest.raises(ConfigError, match="functional and sequential"):
        to_plain_model(network)


@pytest.mark.parametrize("cls", [KaimingNormal, KaimingUniform])
def test_kaiming_initialisers_become_keras_ones_drawing_the_same_values(cls):
    layer = MaskedConv2D(8, 3, kernel_initializer=cls(gain=1.5, density=0.25, seed=4),
                         mask_rule="topk", name="conv")
    network = keras.Sequential([keras.Input((5, 5, 3)), layer])
    plain_init = to_plain_model(network).get_layer("conv").kernel_initializer
    assert isinstance(plain_init, keras.initializers.VarianceScaling)
    np.testing.assert_allclose(plain_init((3, 3, 3, 8)), layer.kernel_initializer((3, 3, 3, 8)),
                               rtol=1e-6)


def test_initialisers_without_keras_twin_become_he_normal():
    network = keras.Sequential([keras.Input((4,)), MaskedDense(
        3, kernel_initializer=SignedKaimingConstant(seed=1), name="d")])
    config = to_plain_model(network).get_layer("d").get_config()["kernel_initializer"]
    assert config["class_name"] == "VarianceScaling"
    assert config["config"]["scale"] == 2.0
