import math

import gin
import pytest

from tf_lottery.errors import ConfigError
from tf_lottery.training.schedules import GhostAlphaSchedule, GhostBetaSchedule


def test_ghost_beta_rises_then_relu_at_switch_epoch():
    beta = GhostBetaSchedule(relu_epoch=90, initial_beta=1.0, final_beta=10.0)
    assert beta(0) == 1.0 and beta(45) == pytest.approx(5.5) and 9.8 < beta(89.9) < 10
    assert beta(90) == math.inf and beta(150) == math.inf
    held = GhostBetaSchedule(relu_epoch=10, initial_beta=1.0, final_beta=3.0, ramp_start_epoch=6)
    assert held(5) == 1.0 and held(8) == pytest.approx(2.0)


def test_ghost_alpha_fades_to_exact_zero_at_first_decay():
    alpha = GhostAlphaSchedule(zero_epoch=90)
    assert alpha(0) == 1.0 and alpha(45) == pytest.approx(0.5) and alpha(89.5) > 0
    assert alpha(90) == 0.0 and alpha(120) == 0.0
    late = GhostAlphaSchedule(zero_epoch=90, fade_start_epoch=30)
    assert late(20) == 1.0 and late(60) == pytest.approx(0.5)


@pytest.mark.parametrize("schedule", [
    GhostBetaSchedule(9, 0.5, 4, 1), GhostAlphaSchedule(9, 0.8, 2)])
def test_config_round_trip(schedule):
    clone = type(schedule).from_config(schedule.get_config())
    for epoch in (0, 0.5, 2, 4.25, 8, 12):
        assert clone(epoch) == schedule(epoch)


def test_gin_configurable_and_checks():
    with gin.unlock_config():
        gin.parse_config("GhostBetaSchedule.relu_epoch = 3\nGhostBetaSchedule.final_beta = 5.0")
    try:
        beta = GhostBetaSchedule()
        assert beta(3) == math.inf and beta(1.5) == pytest.approx(3.0)
    finally:
        gin.clear_config()
    with pytest.raises(ConfigError):
        GhostAlphaSchedule(zero_epoch=5, fade_start_epoch=6)
    with pytest.raises(ConfigError):
        GhostAlphaSchedule()(-1)
