"""Tiny models and data for search tests."""
import keras

from tf_lottery.data import load_dataset
from tf_lottery.experiment import Experiment
from tf_lottery.layers import MaskedConv2D, MaskedDense
from tf_lottery.training.recipe import TrainingRecipe


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


def tiny_data(seed=0, train_examples=256):
    return load_dataset(batch_size=64, train_examples=train_examples, test_examples=128,
                        seed=seed)


def mlp(input_shape, num_classes, mask_rule=None, score_initializer="zeros", hidden=16):
    """flatten -> fc1 (relu) -> output, with fixed layer names (masks are saved by name)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = MaskedDense(hidden, activation="relu", name="fc1", mask_rule=mask_rule,
                    score_initializer=score_initializer)(x)
    outputs = MaskedDense(num_classes, name="output", mask_rule=mask_rule,
                          score_initializer=score_initializer)(x)
    return keras.Model(inputs, outputs, name="mlp")


def constant_recipe(optimizer="adam", learning_rate=1e-2, epochs=1, **kwargs):
    """A TrainingRecipe at a constant learning rate, no weight decay, no XLA (fast to trace)."""
    return TrainingRecipe(optimizer=optimizer, learning_rate=learning_rate, weight_decay=0.0,
                          epochs=epochs, lr_schedule="constant", jit_compile=False, **kwargs)


def mlp_experiment(workdir, search, seed=0, model_fn=mlp):
    """An Experiment on 512 training examples in batches of 64 (8 steps per epoch)."""
    return Experiment(workdir=str(workdir), search=search, model_fn=model_fn,
                      dataset=tiny_data(train_examples=512), seed=seed, verbose=0,
                      tensorboard=False)


def built(search, workdir):
    """(model, experiment) after build and on_init, as RoundSearch.run starts."""
    exp = mlp_experiment(workdir, search)
    model = search.build(exp)
    model(next(iter(exp.dataset.test))[0][:1])
    search.on_init(model, exp)
    return model, exp
