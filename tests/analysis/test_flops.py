import keras
import numpy as np
import pytest

from tf_lottery.analysis import flops, flops_metrics
from tf_lottery.errors import ConfigError
from tf_lottery.masks import get_masks, set_masks
from tf_lottery.models import sparsify
from tf_lottery.sparsity import n_m_mask
from tf_lottery.training.sparse_model import SparseModel


def _conv_model():
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(4, 3, padding="valid", name="conv")(inputs)  # 3x3 output
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)  # 3x3 output
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


CONV = 9 * 2 * 4 * 9  # 3·3·2·4 kernel entries at 3·3 output positions
DW = 9 * 4 * 9  # 3·3·4·1 kernel entries at 3·3 output positions
FC = 36 * 3


def test_dense_model_counts_kernel_entries_times_output_positions():
    result = flops(_conv_model())
    assert result["layers"]["conv"] == {"type": "Conv2D", "macs": CONV, "dense_macs": CONV,
                                        "density": 1.0}
    assert result["layers"]["dw"]["macs"] == DW
    assert result["layers"]["fc"]["macs"] == FC
    assert set(result["layers"]) == {"conv", "dw", "fc"}  # BatchNorm and biases not counted
    assert result["total_macs"] == result["dense_total_macs"] == CONV + DW + FC
    assert result["skipped"] == []


def test_masked_model_counts_only_unpruned_weights():
    network = sparsify(_conv_model())
    masks = get_masks(network)
    half = np.zeros(masks["conv"].shape, np.float32)
    half[..., :2] = 1  # two of the four filters kept: half of the weights
    set_masks(network, {**masks, "conv": half})
    result = flops(SparseModel(network))
    assert result["layers"]["conv"]["macs"] == CONV // 2
    assert result["layers"]["conv"]["dense_macs"] == CONV
    assert result["layers"]["conv"]["density"] == 0.5
    assert result["total_macs"] == CONV // 2 + DW + FC
    assert result["density"] == pytest.approx((CONV // 2 + DW + FC) / (CONV + DW + FC))
    # 2:4 on the Dense kernel (36 inputs: 9 groups of 4 per column) halves it exactly
    kernel = network.get_layer("fc").raw_kernel.numpy()
    set_masks(network, {**get_masks(network), "fc": n_m_mask(kernel, 2, 4).numpy()})
    assert flops(network)["layers"]["fc"]["macs"] == FC // 2
    assert flops_metrics(network) == {"macs": CONV // 2 + DW + FC // 2,
                                      "dense_macs": CONV + DW + FC,
                                      "macs_fraction": (CONV // 2 + DW + FC // 2)
                                      / (CONV + DW + FC)}
    # a ticket given as masks overrides the layers' own masks
    ticket = {**get_masks(network), "dw": np.zeros(masks["dw"].shape, np.float32)}
    assert flops(network, ticket)["total_macs"] == CONV // 2 + FC // 2


def test_zeros_held_by_a_plain_kernel_are_not_counted():
    inputs = keras.Input((2, 4))  # a Dense applied at 2 positions
    layer = keras.layers.Dense(3, name="fc")
    model = keras.Model(inputs, layer(inputs))
    kernel = np.ones((4, 3), np.float32)
    kernel[0] = 0
    layer.kernel.assign(kernel)
    assert flops(model)["layers"]["fc"] == {"type": "Dense", "macs": 2 * 9, "dense_macs": 2 * 12,
                                            "density": 0.75}


def test_separable_and_transpose_and_skipped_layers():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.SeparableConv2D(3, 3, padding="same", name="sep")(inputs)
    x = keras.layers.Conv2DTranspose(2, 2, strides=2, name="up")(x)  # input 4x4 -> 8x8
    x = keras.layers.Reshape((64, 2))(x)
    x = keras.layers.EinsumDense("abc,cd->abd", output_shape=(64, 2), name="einsum")(x)
    network = sparsify(keras.Model(inputs, x))
    result = flops(network)
    assert result["layers"]["sep"]["macs"] == (9 * 2 + 2 * 3) * 16
    assert result["layers"]["up"]["macs"] == 2 * 2 * 2 * 3 * 16  # kernel × input positions
    assert result["skipped"] == ["einsum"]
    masks = get_masks(network)
    depthwise = np.zeros(masks["sep.depthwise_kernel"].shape, np.float32)
    set_masks(network, {**masks, "sep.depthwise_kernel": depthwise})
    assert flops(network)["layers"]["sep"]["macs"] == 2 * 3 * 16


def test_a_subclassed_model_without_built_shapes_is_a_config_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(ConfigError, match="built output shapes"):
        flops(net)
    assert flops_metrics(net) == {}
