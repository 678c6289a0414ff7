"""Tiny networks and data for end-to-end searches that finish in seconds."""
import functools

import keras

from tf_lottery.data import load_dataset
from tf_lottery.experiment import Experiment
from tf_lottery.layers import MaskedDense
from tf_lottery.training.recipe import TrainingRecipe


def mlp(input_shape, num_classes, mask_rule=None, score_initializer="zeros", hidden=16):
    """flatten -> fc1 (relu) -> output, with fixed layer names (masks are saved by name)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = MaskedDense(hidden, activation="relu", name="fc1", mask_rule=mask_rule,
                    score_initializer=score_initializer)(x)
    outputs = MaskedDense(num_classes, name="output", mask_rule=mask_rule,
                          score_initializer=score_initializer)(x)
    return keras.Model(inputs, outputs, name="mlp")


@functools.lru_cache(maxsize=None)
def tiny_dataset():
    """512 training examples in batches of 64: 8 steps per epoch."""
    return load_dataset(batch_size=64, train_examples=512, test_examples=256)


def recipe(optimizer="adam", learning_rate=1e-2, epochs=1, **kwargs):
    return TrainingRecipe(optimizer=optimizer, learning_rate=learning_rate, weight_decay=0.0,
                          epochs=epochs, lr_schedule="constant", jit_compile=False, **kwargs)


def experiment(workdir, search, seed=0):
    return Experiment(workdir=str(workdir), search=search, model_fn=mlp, dataset=tiny_dataset(),
                      seed=seed, verbose=0, tensorboard=False)


def built(search, workdir):
    """(model, experiment) after build and on_init, as RoundSearch.run starts."""
    exp = experiment(workdir, search)
    model = search.build(exp)
    model(next(iter(exp.dataset.test))[0][:1])
    search.on_init(model, exp)
    return model, exp
