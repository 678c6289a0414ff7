"""Schedules: plain callables of the epoch (a float; fractional epochs are allowed).

`schedule(epoch)` returns the value for training that starts at `epoch` (epoch 0 is the first).
Each schedule is a small gin-configurable class with `get_config()` and a `log_name` under which
`ScheduleCallback` logs its value. The ghost schedules follow ToST §2.2: β of the ghost neurons is
raised and they become ReLU right before the first learning-rate decay, and α of the ghost skips
decreases and is exactly 0 from that epoch on. The ramp shapes (linear) are our choice: the paper
names no formula. Learning-rate schedules have one home, the TrainingRecipe (training/recipe.py:
`schedule` for the optimizer, `learning_rate_at` as a callable of the epoch).
"""
import math

import gin

from tf_lottery.errors import ConfigError
from tf_lottery.serializable import ConfigSerializable


class Schedule(ConfigSerializable):
    """Base class: `__call__(epoch) -> float`, `get_config()`, `from_config()`."""

    log_name = "schedule"

    def __call__(self, epoch):
        raise NotImplementedError


def _check_epoch(epoch):
    epoch = float(epoch)
    if not epoch >= 0:
        raise ConfigError(f"epoch must be >= 0, got {epoch!r}")
    return epoch


def _ramp(epoch, start, end):
    """0 before `start`, 1 from `end` on, linear in between."""
    if epoch <= start:
        return 0.0
    if epoch >= end:
        return 1.0
    return (epoch - start) / (end - start)


@gin.configurable
class GhostBetaSchedule(Schedule):
    """β of the ghost neurons: initial_beta until ramp_start_epoch, linear up to final_beta at
    relu_epoch, then +inf (exactly ReLU) from relu_epoch on (set it to the first LR decay)."""

    log_name = "ghost_beta"

    def __init__(self, relu_epoch=90.0, initial_beta=1.0, final_beta=10.0, ramp_start_epoch=0.0):
        if not 0 <= ramp_start_epoch <= relu_epoch:
            raise ConfigError(f"need 0 <= ramp_start_epoch <= relu_epoch, got "
                              f"{ramp_start_epoch!r}, {relu_epoch!r}")
        if not 0 <= initial_beta <= final_beta < math.inf:
            raise ConfigError(f"need 0 <= initial_beta <= final_beta < inf, got "
                              f"{initial_beta!r}, {final_beta!r}")
        self.relu_epoch = float(relu_epoch)
        self.initial_beta = float(initial_beta)
        self.final_beta = float(final_beta)
        self.ramp_start_epoch = float(ramp_start_epoch)

    def __call__(self, epoch):
        epoch = _check_epoch(epoch)
        if epoch >= self.relu_epoch:
            return math.inf
        fraction = _ramp(epoch, self.ramp_start_epoch, self.relu_epoch)
        return self.initial_beta + fraction * (self.final_beta - self.initial_beta)

    def get_config(self):
        return {"relu_epoch": self.relu_epoch, "initial_beta": self.initial_beta,
                "final_beta": self.final_beta, "ramp_start_epoch": self.ramp_start_epoch}


@gin.configurable
class GhostAlphaSchedule(Schedule):
    """α of the ghost skips: initial_alpha until fade_start_epoch, linear down to 0 at
    zero_epoch, exactly 0.0 from zero_epoch on (set it to the first LR decay)."""

    log_name = "ghost_alpha"

    def __init__(self, zero_epoch=90.0, initial_alpha=1.0, fade_start_epoch=0.0):
        if not 0 <= fade_start_epoch <= zero_epoch:
            raise ConfigError(f"need 0 <= fade_start_epoch <= zero_epoch, got "
                              f"{fade_start_epoch!r}, {zero_epoch!r}")
        if not initial_alpha >= 0:
            raise ConfigError(f"initial_alpha must be >= 0, got {initial_alpha!r}")
        self.zero_epoch = float(zero_epoch)
        self.initial_alpha = float(initial_alpha)
        self.fade_start_epoch = float(fade_start_epoch)

    def __call__(self, epoch):
        epoch = _check_epoch(epoch)
        if epoch >= self.zero_epoch:
            return 0.0
        return self.initial_alpha * (1.0 - _ramp(epoch, self.fade_start_epoch, self.zero_epoch))

    def get_config(self):
        return {"zero_epoch": self.zero_epoch, "initial_alpha": self.initial_alpha,
                "fade_start_epoch": self.fade_start_epoch}
