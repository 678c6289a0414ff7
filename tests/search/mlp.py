"""A tiny masked MLP (seeded per layer, as the zoo) and a cached small offline dataset for the
weak-ticket search tests."""
import functools

import keras

from tf_lottery.data import load_dataset
from tf_lottery.layers import MaskedDense


def mlp(input_shape, num_classes, mask_rule=None, kernel_initializer="glorot_uniform",
        hidden=(16,), **unused):
    """flatten -> MaskedDense hidden (relu) ... -> MaskedDense 'output'; each layer's initialiser
    seeded with seed + layer index, as the zoo does."""
    def initializer(index):
        if isinstance(kernel_initializer, str):
            return kernel_initializer
        config = kernel_initializer.get_config()
        if isinstance(config.get("seed"), int):
            config["seed"] += index
        return type(kernel_initializer).from_config(config)

    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    for index, units in enumerate(hidden):
        x = MaskedDense(units, activation="relu", mask_rule=mask_rule, name=f"fc{index + 1}",
                        kernel_initializer=initializer(index))(x)
    outputs = MaskedDense(num_classes, mask_rule=mask_rule, name="output",
                          kernel_initializer=initializer(len(hidden)))(x)
    return keras.Model(inputs, outputs)


@functools.lru_cache(maxsize=None)
def small_dataset(batch_size=64, train_examples=256, test_examples=128, seed=0):
    """Fashion-MNIST (the offline default), cut down; cached across tests."""
    return load_dataset(batch_size=batch_size, train_examples=train_examples,
                        test_examples=test_examples, seed=seed)
