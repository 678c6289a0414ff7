import keras
import numpy as np
import tensorflow as tf

from tests.conftest import needs_fashion_mnist
from tf_lottery import compat
from tf_lottery import masks as masks_lib
from tf_lottery.data import load_dataset
from tf_lottery.layers import MaskedConv2D, MaskedDense, masked_layers
from tf_lottery.training.sparse_model import SparseModel


def _net(rule="fixed"):
    inputs = keras.Input((28, 28, 1))
    x = MaskedConv2D(8, 3, strides=2, activation="relu", mask_rule=rule)(inputs)
    x = keras.layers.Flatten()(x)
    x = MaskedDense(32, activation="relu", mask_rule=rule)(x)
    return keras.Model(inputs, MaskedDense(10, mask_rule=rule, name="output")(x))


def _compile(model, **kw):
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], **kw)


def test_regularizer_is_added_to_the_training_loss_and_reported():
    model = SparseModel(_net())
    _compile(model)
    x = np.random.default_rng(0).normal(size=(16, 28, 28, 1)).astype("float32")
    y = np.arange(16) % 10
    plain = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    model.add_regularizer("constant", lambda m: tf.constant(5.0))
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    # one step from the same weights: the training loss is the data loss + 5
    assert abs(history.history["loss"][0] - (plain + 5.0)) < 1e-4
    assert history.history["constant"][0] == 5.0


def test_step_hook_runs_inside_every_compiled_step():
    model = SparseModel(_net("sigmoid"))
    model.add_step_hook(lambda m: [layer.beta.assign(tf.cast(m.optimizer.iterations, "float32") + 2.0)
                                   for layer in masked_layers(m)])
    _compile(model, jit_compile=True)
    x = np.zeros((40, 28, 28, 1), "float32")
    model.fit(x, np.zeros(40), batch_size=8, epochs=1, verbose=0)
    # 5 steps; the hook of the last one saw iterations == 4
    assert [float(layer.beta.numpy()) for layer in masked_layers(model)] == [6.0, 6.0, 6.0]


def test_save_and_load_keeps_outputs_and_masks(tmp_path):
    model = SparseModel(_net())
    x = np.random.default_rng(1).normal(size=(4, 28, 28, 1)).astype("float32")
    model(x)
    masked_layers(model)[0].mask.assign(np.random.default_rng(2).integers(
        0, 2, masked_layers(model)[0].mask.shape).astype("float32"))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    for a, b in zip(masks_lib.get_masks(model.network).values(),
                    masks_lib.get_masks(loaded.network).values()):
        np.testing.assert_array_equal(a, b)


@needs_fashion_mnist
def test_trains_on_real_fashion_mnist_loss_falls_sparsity_unchanged():
    data = load_dataset(batch_size=64, train_examples=12800, seed=0)
    model = SparseModel(_net())
    rng = np.random.default_rng(0)
    model(np.zeros((1, 28, 28, 1), "float32"))
    masks = {layer.name: (rng.random(layer.mask.shape) < 0.2).astype("float32")
             for layer in masked_layers(model)}
    masks_lib.set_masks(model.network, masks)
    _compile(model, jit_compile=True)
    history = model.fit(data.train_batches(), steps_per_epoch=100, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0] < 2.3
    for layer in masked_layers(model):
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        assert np.all(kernel[masks[layer.name] == 0] == 0)
        np.testing.assert_array_equal(layer.mask.numpy(), masks[layer.name])
    assert model.evaluate(data.test, verbose=0, return_dict=True)["accuracy"] > 0.6


def test_mixed_precision_training_keeps_pruned_weights_zero():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = SparseModel(_net())
        model(np.zeros((1, 28, 28, 1), "float32"))
        layer = masked_layers(model)[1]
        mask = np.ones(layer.mask.shape, "float32")
        mask[::2] = 0
        layer.mask.assign(mask)
        _compile(model)
        x = np.random.default_rng(0).normal(size=(32, 28, 28, 1)).astype("float32")
        model.fit(x, np.arange(32) % 10, batch_size=8, epochs=1, verbose=0)
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        assert kernel.dtype == np.float32 and np.all(kernel[mask == 0] == 0)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_replace_network_runs_the_new_graph_over_the_same_variables():
    from tf_lottery.layers.ghosts import ghost_modules
    from tf_lottery.training.ghost_insertion import insert_ghosts

    inputs = keras.Input((28, 28, 1))
    x = MaskedConv2D(4, 3, use_bias=False, mask_rule="fixed", name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(keras.layers.BatchNormalization(name="bn")(x))
    x = keras.layers.Flatten()(x)
    plain = keras.Model(inputs, MaskedDense(10, mask_rule="fixed", name="output")(x))
    model = SparseModel(plain)
    _compile(model)
    data = np.random.default_rng(0).normal(size=(8, 28, 28, 1)).astype("float32")
    before = model.predict(data, verbose=0)  # traces a predict function on `plain`
    variables = {id(v) for v in model.weights}
    ghosted = insert_ghosts(plain, initial_alpha=1.0)
    model.replace_network(ghosted)
    assert model.network is ghosted and len(compat.sublayers(model, recursive=False)) == 1
    ghost_vars = {id(v) for layer in sum(ghost_modules(ghosted), []) for v in layer.weights}
    assert {id(v) for v in model.weights} == variables | ghost_vars
    after = model.predict(data, verbose=0)
    assert not np.allclose(after, before)  # the ghost skip and Swish are in
    np.testing.assert_array_equal(after, ghosted.predict(data, verbose=0))
    model.fit(data, np.arange(8), batch_size=8, epochs=1, verbose=0)  # trains the shared layers
    model.replace_network(plain)
    assert {id(v) for v in model.weights} == variables
    np.testing.assert_array_equal(model.predict(data, verbose=0), plain.predict(data, verbose=0))
    assert not np.allclose(model.predict(data, verbose=0), before)
