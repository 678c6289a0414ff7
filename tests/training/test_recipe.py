import math

import keras
import pytest

from tf_lottery.errors import ConfigError
from tf_lottery.training.recipe import TrainingRecipe


def _lr(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step))) if callable(schedule) else schedule


def test_cosine_schedule_matches_the_formula_at_known_steps():
    recipe = TrainingRecipe(learning_rate=0.1, epochs=10, lr_schedule="cosine")
    schedule = recipe.schedule(steps_per_epoch=100)
    for epoch in (0, 2.5, 5, 10):
        expected = 0.05 * (1 + math.cos(math.pi * epoch / 10))
        assert _lr(schedule, int(epoch * 100)) == pytest.approx(expected, abs=1e-6)
        assert recipe.learning_rate_at(epoch) == pytest.approx(expected)


def test_step_decay_tenfold_at_90_and_135():
    lr = TrainingRecipe(learning_rate=0.1, epochs=180, lr_schedule="step",
                        lr_drop_epochs=(90, 135), lr_drop_factor=0.1).learning_rate_at
    assert lr(0) == 0.1 and lr(89.99) == 0.1
    assert lr(90) == pytest.approx(0.01) and lr(134.5) == pytest.approx(0.01)
    assert lr(135) == pytest.approx(0.001) and lr(179) == pytest.approx(0.001)


def test_cosine_and_warmup_cosine():
    cosine = TrainingRecipe(learning_rate=0.1, epochs=180, lr_schedule="cosine").learning_rate_at
    assert cosine(0) == pytest.approx(0.1)
    assert cosine(45) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert cosine(90) == pytest.approx(0.05)
    assert cosine(180) == pytest.approx(0.0) and cosine(200) == pytest.approx(0.0)
    warm = TrainingRecipe(learning_rate=0.1, epochs=105, lr_schedule="cosine",
                          warmup_epochs=5).learning_rate_at
    assert warm(0) == 0.0 and warm(2.5) == pytest.approx(0.05) and warm(5) == pytest.approx(0.1)
    assert warm(55) == pytest.approx(0.05) and warm(105) == pytest.approx(0.0)


def test_a_schedule_from_a_later_step_is_the_schedule_offset():
    recipe = TrainingRecipe(learning_rate=0.1, epochs=10, lr_schedule="cosine")
    full, late = recipe.schedule(100), recipe.schedule(100, start_step=250)
    for step in (0, 100, 750):
        assert _lr(late, step) == pytest.approx(_lr(full, step + 250))
    assert recipe.schedule(100, constant_learning_rate=0.01, start_step=250) == 0.01
    constant = TrainingRecipe(learning_rate=0.1, lr_schedule="constant")
    assert constant.schedule(100, start_step=250) == 0.1


def test_step_schedule_with_warmup():
    recipe = TrainingRecipe(learning_rate=0.1, epochs=85, lr_schedule="step",
                            lr_drop_epochs=(56, 71), warmup_epochs=2)
    schedule = recipe.schedule(steps_per_epoch=10)
    assert _lr(schedule, 10) == pytest.approx(0.05)
    assert _lr(schedule, 100) == pytest.approx(0.1)
    assert _lr(schedule, 560) == pytest.approx(0.01)
    assert _lr(schedule, 710) == pytest.approx(0.001)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_constant_learning_rate_override_and_weight_decay_exclusion(optimizer):
    recipe = TrainingRecipe(optimizer=optimizer, weight_decay=1e-4)
    optimizer = recipe.make_optimizer(10, constant_learning_rate=0.003,
                                      exclude_from_weight_decay=["scores"])
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.003)
    scores = keras.Variable([1.0, 1.0], name="scores")
    kernel = keras.Variable([1.0, 1.0], name="kernel")
    optimizer.apply_gradients([(keras.ops.zeros(2), scores), (keras.ops.zeros(2), kernel)])
    assert list(keras.ops.convert_to_numpy(scores)) == [1.0, 1.0]  # no decay on the scores
    # one step of either rule from a zero gradient and an empty buffer: w(1 − lr·wd)
    assert float(keras.ops.convert_to_numpy(kernel)[0]) == pytest.approx(1 - 0.003 * 1e-4,
                                                                          rel=1e-7)


def test_bad_recipes_are_config_errors():
    with pytest.raises(ConfigError, match="optimizer"):
        TrainingRecipe(optimizer="lbfgs")
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainingRecipe(label_smoothing=1.0)
    with pytest.raises(ConfigError, match="epochs"):
        TrainingRecipe(epochs=0)


def test_cosine_updated_once_per_epoch_as_the_reference_code_steps_it():
    """lr_update='epoch': epoch e of E trains at γ·½(1 + cos(πe/E)) for all its steps (edge-popup
    code calls the scheduler once per epoch); warm-up epoch e at γ·(e+1)/W."""
    recipe = TrainingRecipe(learning_rate=0.1, epochs=2, lr_schedule="cosine", lr_update="epoch")
    schedule = recipe.schedule(steps_per_epoch=10)
    assert [_lr(schedule, s) for s in (0, 9)] == pytest.approx([0.1, 0.1])
    assert [_lr(schedule, s) for s in (10, 19)] == pytest.approx([0.05, 0.05])
    assert recipe.learning_rate_at(1.5) == pytest.approx(0.05)
    warm = TrainingRecipe(learning_rate=0.1, epochs=6, lr_schedule="cosine", lr_update="epoch",
                          warmup_epochs=2)
    schedule = warm.schedule(steps_per_epoch=10)
    expected = [0.05, 0.1, 0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.05, 0.05 * (1 + math.cos(
        3 * math.pi / 4))]
    assert [_lr(schedule, 10 * e + 3) for e in range(6)] == pytest.approx(expected, abs=1e-6)
    assert [warm.learning_rate_at(e + 0.3) for e in range(6)] == pytest.approx(expected)
    with pytest.raises(ConfigError, match="lr_update"):
        TrainingRecipe(lr_update="batch")
