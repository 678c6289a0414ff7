"""PyTorchSGD / PyTorchAdam against a NumPy transcription of torch.optim's update rules (coupled
L2 weight decay through momentum), and the recipe's choice of optimizer per weight_decay_mode."""
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.errors import ConfigError
from tf_lottery.training.optimizers import PyTorchAdam, PyTorchSGD, last_applied_learning_rate
from tf_lottery.training.recipe import TrainingRecipe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, WD = 200, 0.05
A = np.array([[1.0, 0.5, 0.0], [0.0, 2.0, -1.0], [0.5, 0.0, 1.5]])
B = np.array([1.0, -2.0, 0.5])
W0 = np.array([0.8, -1.2, 2.0])


def cosine(step, lr=0.1, steps=STEPS):
    return 0.5 * lr * (1 + math.cos(math.pi * step / steps))


def loss_grad(w, zero):
    """∇ of ½‖Aw − b‖² (or 0: only the weight decay moves w)."""
    return np.zeros_like(w) if zero else A.T @ (A @ w - B)


def torch_sgd(zero, momentum=0.9, nesterov=False):
    """torch.optim.SGD.step, transcribed (dampening 0, maximize False)."""
    w, buf = W0.copy(), None
    for t in range(STEPS):
        g = loss_grad(w, zero) + WD * w
        buf = g.copy() if buf is None else momentum * buf + g
        w = w - cosine(t) * ((g + momentum * buf) if nesterov else buf)
    return w


def torch_adam(zero, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam.step, transcribed (amsgrad False)."""
    w, m, v = W0.copy(), np.zeros(3), np.zeros(3)
    for t in range(1, STEPS + 1):
        g = loss_grad(w, zero) + WD * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr = cosine(t - 1, lr=0.01)
        w = w - lr / (1 - b1 ** t) * m / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return w


def run_keras(optimizer, zero, jit_compile=False):
    w = keras.Variable(W0.astype("float32"), name="kernel")
    a, b = tf.constant(A, tf.float32), tf.constant(B, tf.float32)

    def step():
        with tf.GradientTape() as tape:
            loss = 0.0 * tf.reduce_sum(w.value) if zero else \
                0.5 * tf.reduce_sum(tf.square(tf.linalg.matvec(a, w.value) - b))
        optimizer.apply_gradients([(tape.gradient(loss, w.value), w)])

    step = tf.function(step, jit_compile=jit_compile)
    for _ in range(STEPS):
        step()
    return keras.ops.convert_to_numpy(w), optimizer


@pytest.mark.parametrize("zero", [True, False], ids=["zero_gradient", "quadratic"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_pytorch_for_200_steps(zero, nesterov):
    schedule = keras.optimizers.schedules.CosineDecay(0.1, STEPS)
    w, _ = run_keras(PyTorchSGD(schedule, momentum=0.9, nesterov=nesterov, weight_decay=WD), zero)
    np.testing.assert_allclose(w, torch_sgd(zero, nesterov=nesterov), rtol=2e-4, atol=1e-5)
    if zero:  # coupled decay through momentum shrinks ~1/(1-μ) = 10× more than Keras' own
        keras_w, _ = run_keras(keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=WD), zero)
        assert np.all(np.abs(w) < np.abs(keras_w) * 0.9)


@pytest.mark.parametrize("zero", [True, False], ids=["zero_gradient", "quadratic"])
def test_adam_matches_pytorch_for_200_steps(zero):
    schedule = keras.optimizers.schedules.CosineDecay(0.01, STEPS)
    w, _ = run_keras(PyTorchAdam(schedule, weight_decay=WD), zero)
    np.testing.assert_allclose(w, torch_adam(zero), rtol=2e-4, atol=1e-5)


def test_jit_compiled_steps_agree():
    w, _ = run_keras(PyTorchSGD(0.05, momentum=0.9, weight_decay=WD), False, jit_compile=True)
    eager, _ = run_keras(PyTorchSGD(0.05, momentum=0.9, weight_decay=WD), False)
    np.testing.assert_allclose(w, eager, rtol=1e-5)


def test_excluded_variables_get_no_decay_and_the_rest_do():
    optimizer = PyTorchSGD(0.1, momentum=0.9, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=["scores"])
    scores = keras.Variable([1.0, -2.0], name="scores")
    kernel = keras.Variable([1.0, -2.0], name="kernel")
    for _ in range(3):
        optimizer.apply_gradients([(tf.zeros(2), scores), (tf.zeros(2), kernel)])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(scores), [1.0, -2.0])
    # buffers 0.5w, then w after steps 1..3: b1 = .5w0, w1 = .95w0, b2 = .9·.5w0 + .5·.95w0, ...
    w, buf = 1.0, 0.0
    for _ in range(3):
        buf = 0.9 * buf + 0.5 * w
        w -= 0.1 * buf
    assert float(keras.ops.convert_to_numpy(kernel)[0]) == pytest.approx(w, rel=1e-6)


def test_serialisation_keeps_the_coupled_decay():
    optimizer = PyTorchSGD(0.1, momentum=0.8, nesterov=True, weight_decay=3e-4)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(clone, PyTorchSGD) and clone.weight_decay is None
    assert (clone.coupled_weight_decay, clone.momentum, clone.nesterov) == (3e-4, 0.8, True)
    adam = keras.optimizers.deserialize(keras.optimizers.serialize(PyTorchAdam(weight_decay=2e-4)))
    assert isinstance(adam, PyTorchAdam) and adam.coupled_weight_decay == 2e-4


def test_recipe_modes_pick_the_rule():
    assert isinstance(TrainingRecipe(optimizer="sgd").make_optimizer(10), PyTorchSGD)
    assert isinstance(TrainingRecipe(optimizer="adam").make_optimizer(10), PyTorchAdam)
    keras_sgd = TrainingRecipe(optimizer="sgd", weight_decay_mode="decoupled").make_optimizer(10)
    assert type(keras_sgd) is keras.optimizers.SGD and keras_sgd.weight_decay == 1e-4
    adamw = TrainingRecipe(optimizer="adamw")
    assert adamw.weight_decay_mode == "decoupled"
    assert type(adamw.make_optimizer(10)) is keras.optimizers.AdamW
    with pytest.raises(ConfigError, match="adamw"):
        TrainingRecipe(optimizer="adamw", weight_decay_mode="coupled")
    with pytest.raises(ConfigError, match="weight_decay_mode"):
        TrainingRecipe(weight_decay_mode="l2")
    with pytest.raises(ConfigError, match="weight_decay"):
        TrainingRecipe(weight_decay=-1e-4)


def test_last_applied_learning_rate_is_the_rate_of_the_last_step():
    recipe = TrainingRecipe(learning_rate=0.1, epochs=2, lr_schedule="cosine")
    optimizer = recipe.make_optimizer(steps_per_epoch=5)
    variable = keras.Variable([1.0])
    for _ in range(10):
        optimizer.apply_gradients([(tf.ones(1), variable)])
    # after 10 of 10 steps the schedule says 0; the last step used cosine(9 / 10)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.0)
    assert last_applied_learning_rate(optimizer) == pytest.approx(cosine(9, 0.1, 10))
    assert last_applied_learning_rate(recipe.make_optimizer(5, 0.003)) == pytest.approx(0.003)


def test_decay_is_added_once_under_a_mirrored_strategy(tmp_path):
    """Two replicas: the decay must act on the all-reduced gradient, not once per replica."""
    out = tmp_path / "weights.npz"
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "tests.training.distributed_run", "optimizer",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    weights = np.load(out)
    assert int(weights["replicas"]) == 2
    for name in ("sgd", "adam"):
        np.testing.assert_allclose(weights[f"{name}_mirrored"], weights[f"{name}_one_device"],
                                   rtol=1e-5, atol=1e-6, err_msg=name)
        # and the decay did act (a weight-decay-free run ends elsewhere)
        assert not np.allclose(weights[f"{name}_one_device"], weights[f"{name}_no_decay"],
                               atol=1e-3)
