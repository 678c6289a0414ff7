import math

import keras
import numpy as np
import pytest

from tf_lottery.errors import ConfigError
from tf_lottery.layers.ghosts import GhostActivation, GhostSkip
from tf_lottery.training.callbacks import ScheduleCallback, bind_ghost_schedules
from tf_lottery.training.recipe import TrainingRecipe
from tf_lottery.training.schedules import GhostAlphaSchedule, GhostBetaSchedule


def _ghost_model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4)(inputs)
    hidden = GhostSkip(name="skip")([inputs, hidden])
    hidden = GhostActivation(name="act")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    model.compile(optimizer=keras.optimizers.SGD(1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class _Recorder(keras.callbacks.Callback):
    """Reads the variables the train step will use, after ScheduleCallback set them."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def _record(self, when):
        act, skip = self.model.get_layer("act"), self.model.get_layer("skip")
        beta = math.inf if bool(act.relu.numpy()) else float(act.beta.numpy())
        self.seen.append((when, beta, float(skip.alpha.numpy()),
                          float(self.model.optimizer.learning_rate.numpy())))

    def on_epoch_begin(self, epoch, logs=None):
        self._record(("epoch", epoch))

    def on_train_batch_begin(self, batch, logs=None):
        self._record(("batch", batch))


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 4)).astype(np.float32), rng.integers(0, 2, size=(8,))


def test_callback_sets_variables_each_epoch_and_logs_them():
    model = _ghost_model()
    bindings = bind_ghost_schedules(model, GhostBetaSchedule(relu_epoch=2, final_beta=3.0),
                                    GhostAlphaSchedule(zero_epoch=2))
    halving = TrainingRecipe(learning_rate=0.1, epochs=4, lr_schedule="step", lr_drop_epochs=(1, 3),
                             lr_drop_factor=0.5, jit_compile=False)
    callback = ScheduleCallback(bindings + [("learning_rate", halving.learning_rate_at)])
    recorder = _Recorder()
    x, y = _data()
    history = model.fit(x, y, batch_size=4, epochs=4, verbose=0, callbacks=[callback, recorder])
    per_epoch = [values for when, *values in recorder.seen if when[0] == "epoch"]
    assert per_epoch == [[1.0, 1.0, pytest.approx(0.1)], [2.0, 0.5, pytest.approx(0.05)],
                         [math.inf, 0.0, pytest.approx(0.05)],
                         [math.inf, 0.0, pytest.approx(0.025)]]
    assert history.history["ghost_beta"] == [1.0, 2.0, math.inf, math.inf]
    assert history.history["ghost_alpha"] == [1.0, 0.5, 0.0, 0.0]
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.05, 0.025])


def test_per_batch_uses_fractional_epochs():
    model = _ghost_model()
    beta = GhostBetaSchedule(relu_epoch=2, initial_beta=1.0, final_beta=3.0)
    callback = ScheduleCallback(bind_ghost_schedules(model, beta_schedule=beta), per_batch=True)
    recorder = _Recorder()
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[callback, recorder])
    per_batch = [values[0] for when, *values in recorder.seen if when[0] == "batch"]
    assert per_batch == pytest.approx([1.0, 1.5, 2.0, 2.5])


def test_faded_ghosts_train_like_relu():
    """Once faded, the compiled train step computes the plain ReLU network."""
    model = _ghost_model()
    callback = ScheduleCallback(bind_ghost_schedules(
        model, GhostBetaSchedule(relu_epoch=0, final_beta=2.0), GhostAlphaSchedule(zero_epoch=0)))
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    first, last = model.layers[1], model.layers[-1]
    expected = last(keras.activations.relu(first(x)))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected.numpy(), rtol=1e-6)


def test_variables_setters_and_bad_targets():
    variable = keras.Variable(0.0, trainable=False)
    seen = []
    callback = ScheduleCallback([(variable, lambda e: 2 * e), ((seen.append,), lambda e: e + 1)])
    logged = callback.apply(1.5)
    assert sorted(logged.values()) == [2.5, 3.0] and len(logged) == 2
    assert float(variable.numpy()) == 3.0 and seen == [2.5]
    with pytest.raises(ConfigError):
        ScheduleCallback([("momentum", lambda e: e)]).apply(0)
    with pytest.raises(ConfigError):
        ScheduleCallback([(variable, 3.0)])
