import os

import keras
import numpy as np
import pytest

from tests.conftest import needs_fashion_mnist
from tests.search.helpers import tiny_data, tiny_net
from tf_lottery.errors import TrainingError
from tf_lottery.training.fitting import fit_round, read_history
from tf_lottery.training.recipe import TrainingRecipe
from tf_lottery.training.sparse_model import SparseModel


def _model():
    model = SparseModel(tiny_net((28, 28, 1), 10))
    model(np.zeros((1, 28, 28, 1), "float32"))
    return model


def _fit(model, directory, epochs, loss=None):
    recipe = TrainingRecipe(optimizer="sgd", learning_rate=0.05, epochs=epochs,
                            lr_schedule="constant", jit_compile=False)
    data = tiny_data()
    return fit_round(model, data, recipe.make_optimizer(data.steps_per_epoch),
                     loss or recipe.make_loss(), epochs, directory, verbose=0, validate=False)


def _nan_loss(y_true, y_pred):
    return keras.ops.mean(y_pred) * float("nan")


@needs_fashion_mnist
def test_interrupted_round_resumes_to_the_same_weights(tmp_path):
    keras.utils.set_random_seed(3)
    straight = _model()
    initial = straight.get_weights()
    _fit(straight, str(tmp_path / "a"), epochs=3)

    resumed = _model()
    resumed.set_weights(initial)
    _fit(resumed, str(tmp_path / "b"), epochs=2)  # "killed" after epoch 2
    fresh = _model()  # a new process: fresh objects, same command
    history = _fit(fresh, str(tmp_path / "b"), epochs=3)
    assert [h["epoch"] for h in history] == [0, 1, 2]
    for a, b in zip(straight.get_weights(), fresh.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@needs_fashion_mnist
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    model = _model()
    _fit(model, str(tmp_path), epochs=2)
    checkpoints = os.path.join(tmp_path, "checkpoints")
    for name in os.listdir(checkpoints):
        if name.startswith("ckpt-2") and "data" in name:
            with open(os.path.join(checkpoints, name), "r+b") as f:
                f.truncate(10)
    history = _fit(_model(), str(tmp_path), epochs=2)
    assert "unreadable" in capsys.readouterr().out
    assert len(history) == 2  # epoch 2 was trained again from checkpoint 1


@needs_fashion_mnist
def test_nan_loss_stops_with_one_readable_error_and_keeps_last_good_checkpoint(tmp_path):
    model = _model()
    _fit(model, str(tmp_path), epochs=1)
    with pytest.raises(TrainingError, match=r"\(NaN/inf\) in epoch 2, step \d+.*ckpt-1"):
        _fit(_model(), str(tmp_path), epochs=2, loss=_nan_loss)
    assert [h["epoch"] for h in read_history(os.path.join(tmp_path, "history.json"))] == [0]


@needs_fashion_mnist
def test_a_variable_going_non_finite_under_a_finite_loss_stops_the_round(tmp_path):
    model = _model()
    _fit(model, str(tmp_path), epochs=1)

    class BreakAVariable(keras.callbacks.Callback):  # as overflowing edge-popup scores do
        def on_epoch_end(self, epoch, logs=None):
            variable = model.trainable_variables[0]
            variable.assign(np.full(variable.shape, np.inf, "float32"))

    recipe = TrainingRecipe(optimizer="sgd", learning_rate=0.05, epochs=2,
                            lr_schedule="constant", jit_compile=False)
    data = tiny_data()
    name = model.trainable_variables[0].path
    with pytest.raises(TrainingError, match=rf"epoch 2, in variable {name}.*ckpt-1"):
        fit_round(model, data, recipe.make_optimizer(data.steps_per_epoch), recipe.make_loss(),
                  2, str(tmp_path), callbacks=[BreakAVariable()], verbose=0, validate=False)
    assert [h["epoch"] for h in read_history(os.path.join(tmp_path, "history.json"))] == [0]



@pytest.mark.parametrize("losses, diverged", [
    ([2.3, 9.0, 40.0, 2301.0], True),      # past 1000 x the first loss: the lr is far too high
    ([0.01, 0.5, 999.0], False),           # below 1000 x max(1, first loss): noise, not divergence
    ([0.01, 0.5, 1001.0], True),
    ([2.3, 2.0, 1.5, 1.2], False),
])
def test_a_finite_loss_growing_by_orders_of_magnitude_is_divergence(tmp_path, losses, diverged):
    from tf_lottery.training.fitting import DIVERGENCE_FACTOR, EpochCheckpoint

    saver = EpochCheckpoint(manager=None, history_path=str(tmp_path / "history.json"))
    saver.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    saver.model.stop_training = False
    saver.on_epoch_begin(0)
    for step, loss in enumerate(losses):
        saver.on_train_batch_end(step, {"loss": loss})
    assert saver.model.stop_training is diverged
    if diverged:
        assert saver.nan_at == f"epoch 1, step {len(losses)}"
        assert saver.diverged == (f"loss {losses[-1]:.3g}, over {DIVERGENCE_FACTOR:g} x the "
                                  f"first loss {losses[0]:.3g}")


@needs_fashion_mnist
def test_a_garbled_state_file_and_history_are_set_aside_and_the_round_resumes(tmp_path, capsys):
    _fit(_model(), str(tmp_path), epochs=1)
    with open(os.path.join(tmp_path, "checkpoints", "checkpoint"), "wb") as f:
        f.write(b"\x00\xffgarbage {{{")
    with open(os.path.join(tmp_path, "history.json"), "r+b") as f:
        f.truncate(7)
    history = _fit(_model(), str(tmp_path), epochs=2)
    assert [h["epoch"] for h in history] == [1]  # resumed from ckpt-1: epoch 2 only
    err = capsys.readouterr().err
    assert "checkpoints/checkpoint is unreadable" in err and "history.json is unreadable" in err
    assert os.path.exists(os.path.join(tmp_path, "checkpoints", "checkpoint.damaged"))
