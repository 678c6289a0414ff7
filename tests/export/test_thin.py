"""export.thin: channel-pruned layers physically smaller, outputs equal to the masked model's."""
import keras
import numpy as np
import pytest

from tests.sparsity.test_channels import _randomise_norms, branching_net
from tf_lottery import masks as masks_lib
from tf_lottery.analysis import flops
from tf_lottery.errors import ConfigError
from tf_lottery.export import export_saved_model
from tf_lottery.export.thin import thin
from tf_lottery.models import zoo
from tf_lottery.models.sparsify import sparsify
from tf_lottery.pruning.magnitude import magnitude_masks
from tf_lottery.sparsity.channels import prune_channels


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=(4,) + shape).astype("float32")


def _check_equal(model, thinned, shape, atol=1e-5):
    x = _inputs(shape)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(thinned(x, training=False)), expected,
                               atol=atol, rtol=1e-5)
    assert np.abs(expected).max() > 0.01  # not a trivially zero output


def test_thin_cuts_filters_rows_depthwise_and_batchnorm_entries():
    model = branching_net()
    _randomise_norms(model)
    masks_lib.set_masks(model, prune_channels(model, 0.5, "l1"))
    thinned = thin(model)
    assert not any(hasattr(layer, "mask") for layer in thinned.layers)  # plain Keras layers
    sizes = {layer.name: layer.get_weights()[0].shape for layer in thinned.layers
             if layer.get_weights()}
    assert sizes["c1"] == (3, 3, 2, 2) and sizes["bn1"] == (2,)
    assert sizes["c2"] == sizes["c3"] == (1, 1, 2, 2) and sizes["dw"] == (3, 3, 2, 1)
    assert sizes["c4"] == (1, 1, 2, 1)  # round-half-up(0.5 * 3) = 2 removed
    assert sizes["output"] == (4 * (2 + 1), 5)  # 2x2 positions x (2 + 1) channels
    _check_equal(model, thinned, (8, 8, 2))
    assert flops(thinned)["total_macs"] == flops(model)["total_macs"] - \
        flops(model)["layers"]["dw"]["macs"] + flops(thinned)["layers"]["dw"]["macs"]


def test_thinned_resnet20_equals_the_masked_one_and_saves_the_macs(tmp_path):
    model = zoo.cifar_resnet(depth=20, width=8)
    _randomise_norms(model)
    masks_lib.set_masks(model, prune_channels(model, 0.5, "l2"))
    thinned = thin(model)
    _check_equal(model, thinned, (32, 32, 3))
    counted, dense = flops(thinned), flops(zoo.cifar_resnet(depth=20, width=8))
    assert counted["dense_total_macs"] == flops(model)["total_macs"]  # nothing dense left over
    assert counted["total_macs"] < 0.3 * dense["total_macs"]  # ~ (1/2)^2 in the inner convs
    path = export_saved_model(thinned, str(tmp_path / "thin"))  # a plain model ships as usual
    assert (tmp_path / "thin" / "saved_model.pb").exists() and path


def test_thinned_mobilenet_v2_equals_the_masked_one():
    network = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                             classes=10, classifier_activation=None)
    model = sparsify(network)
    _randomise_norms(model)
    masks_lib.set_masks(model, prune_channels(model, 0.5, "bn_gamma", scope="global"))
    thinned = thin(model)
    _check_equal(model, thinned, (32, 32, 3), atol=1e-4)
    assert thinned.count_params() < 0.6 * network.count_params()


def test_thinning_without_channel_masks_is_one_config_error():
    model = zoo.cifar_resnet(depth=8, width=4)
    with pytest.raises(ConfigError, match="nothing to thin"):
        thin(model)
    masks_lib.set_masks(model, magnitude_masks(model, 0.5))  # unstructured: no whole channel
    with pytest.raises(ConfigError, match="nothing to thin.*unstructured"):
        thin(model)


def test_a_sequential_model_thins_through_flatten():
    model = sparsify(keras.Sequential([
        keras.Input((6, 6, 1)), keras.layers.Conv2D(6, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
        keras.layers.Flatten(), keras.layers.Dense(5, name="fc"),
        keras.layers.Dense(3, name="out")]))
    _randomise_norms(model)
    masks_lib.set_masks(model, prune_channels(model, 0.5, "l1"))
    thinned = thin(model)
    assert isinstance(thinned, keras.Sequential)
    assert thinned.get_layer("conv").filters == 3 and thinned.get_layer("fc").units == 2
    assert thinned.get_layer("fc").kernel.shape == (4 * 4 * 3, 2)
    _check_equal(model, thinned, (6, 6, 1))
