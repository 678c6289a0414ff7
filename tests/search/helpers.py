"""Tiny models and data for search tests."""
import keras

from tf_lottery.data import load_dataset
from tf_lottery.layers import MaskedConv2D, MaskedDense


def tiny_net(input_shape, num_classes, mask_rule=None, kernel_initializer="glorot_uniform",
             score_initializer="kaiming_uniform", affine=True, width=16):
    """conv(8) -> BN -> ReLU -> pool -> dense(width) -> ReLU -> dense(output)."""
    masking = dict(mask_rule=mask_rule, score_initializer=score_initializer,
                   kernel_initializer=kernel_initializer)
    inputs = keras.Input(input_shape)
    x = MaskedConv2D(8, 3, use_bias=False, name="conv", **masking)(inputs)
    x = keras.layers.BatchNormalization(center=affine, scale=affine, name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D(4)(x)
    x = keras.layers.Flatten()(x)
    x = MaskedDense(width, activation="relu", name="fc", **masking)(x)
    outputs = MaskedDense(num_classes, name="output", **masking)(x)
    return keras.Model(inputs, outputs)


def tiny_data(seed=0):
    return load_dataset(batch_size=64, train_examples=256, test_examples=128, seed=seed)
