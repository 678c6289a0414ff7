"""Sparsity schedules with tensorflow-model-optimization's names and semantics.

A schedule is called with the training step (a Python int or an in-graph integer tensor) and
returns `(should_prune, sparsity)`: a bool tensor saying whether masks are updated at this step
and the float32 sparsity (fraction of weights *removed*) they are updated to.

Steps, as in tfmot: the k-th training batch (k = 1, 2, ...) is step k. tfmot's `pruning_step`
becomes 1 in the wrapper's first training call; here the step of a batch is
`optimizer.iterations + 1` read at its start, the same number, and it is checkpointed with the
optimizer, so a resumed run continues the schedule where it stopped. A mask update at step k
happens before that batch's forward pass, as in tfmot.
"""
import numbers

import keras
import tensorflow as tf

from tf_lottery.errors import ConfigError, check_fraction
from tf_lottery.serializable import ConfigSerializable

_PACKAGE = "tf_lottery"


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class PruningSchedule(ConfigSerializable):
    """Base class: when masks change (`should_prune`) and to which sparsity.

    Subclasses implement `sparsity_at(step)` (float32 tensor) and set `begin_step`, `end_step`
    (-1: no end), `frequency` and `final_sparsity` (the sparsity the schedule ends at, used to
    scale per-layer targets of non-uniform distributions).
    """

    def _check_steps(self, begin_step, end_step, frequency, allow_no_end):
        self.begin_step = _check_int("begin_step", begin_step, 0)
        if not (allow_no_end and end_step == -1):
            end_step = _check_int("end_step", end_step, 0)
            if end_step <= self.begin_step:
                raise ConfigError(f"end_step must be > begin_step ({self.begin_step})"
                                  f"{' or -1 (no end)' if allow_no_end else ''}, got {end_step}")
        self.end_step = int(end_step)
        self.frequency = _check_int("frequency", frequency, 1)

    def should_prune(self, step):
        """begin_step <= step <= end_step (any step >= begin_step when end_step is -1) and
        (step - begin_step) % frequency == 0."""
        step = tf.cast(step, tf.int64)
        in_range = step >= self.begin_step
        if self.end_step >= 0:
            in_range = in_range & (step <= self.end_step)
        return in_range & (tf.math.floormod(step - self.begin_step, self.frequency) == 0)

    def sparsity_at(self, step):
        raise NotImplementedError

    def __call__(self, step):
        return self.should_prune(step), self.sparsity_at(step)


@keras.saving.register_keras_serializable(_PACKAGE)
class ConstantSparsity(PruningSchedule):
    """s_t = target_sparsity, applied every `frequency` steps in [begin_step, end_step]
    (tfmot.sparsity.keras.ConstantSparsity; end_step=-1: until training ends)."""

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        self.target_sparsity = check_fraction("target_sparsity", target_sparsity)
        self._check_steps(begin_step, end_step, frequency, allow_no_end=True)

    @property
    def final_sparsity(self):
        return self.target_sparsity

    def sparsity_at(self, step):
        return tf.constant(self.target_sparsity, tf.float32)

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, "begin_step": self.begin_step,
                "end_step": self.end_step, "frequency": self.frequency}


@keras.saving.register_keras_serializable(_PACKAGE)
class PolynomialDecay(PruningSchedule):
    """Zhu & Gupta 2017, Eq. 1: s_t = s_f + (s_i − s_f)(1 − p)^power,
    p = clip((t − t₀)/(t_end − t₀), 0, 1), applied every `frequency` steps in [t₀, t_end]
    (tfmot.sparsity.keras.PolynomialDecay).

    Args:
      initial_sparsity, final_sparsity: s_i and s_f, fractions in [0, 1).
      begin_step, end_step: t₀ and t_end, optimizer steps.
      power: the exponent (3 as Zhu & Gupta).
      frequency: masks change every `frequency` steps only (tfmot's default 100: keep it below
        end_step - begin_step, or the schedule is never applied in between).
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3,
                 frequency=100):
        self.initial_sparsity = check_fraction("initial_sparsity", initial_sparsity)
        self.final_sparsity = check_fraction("final_sparsity", final_sparsity)
        if isinstance(power, bool) or not isinstance(power, numbers.Real) or power <= 0:
            raise ConfigError(f"power must be a number > 0, got {power!r}")
        self.power = power
        self._check_steps(begin_step, end_step, frequency, allow_no_end=False)

    def sparsity_at(self, step):
        progress = tf.cast(tf.cast(step, tf.int64) - self.begin_step, tf.float32) / float(
            self.end_step - self.begin_step)
        progress = tf.clip_by_value(progress, 0.0, 1.0)
        return (self.final_sparsity + (self.initial_sparsity - self.final_sparsity)
                * tf.pow(1.0 - progress, float(self.power)))

    def get_config(self):
        return {"initial_sparsity": self.initial_sparsity,
                "final_sparsity": self.final_sparsity, "begin_step": self.begin_step,
                "end_step": self.end_step, "power": self.power, "frequency": self.frequency}


def check_schedule(schedule):
    """`schedule` if it is a PruningSchedule, else a ConfigError naming the argument."""
    if not isinstance(schedule, PruningSchedule):
        raise ConfigError(f"pruning_schedule must be a PruningSchedule (ConstantSparsity, "
                          f"PolynomialDecay), got {schedule!r}")
    return schedule
