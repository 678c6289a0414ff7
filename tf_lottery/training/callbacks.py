"""One Keras callback that applies every schedule (learning rate, ghost β/α, temperatures...).

    callback = ScheduleCallback(
        bind_ghost_schedules(model, GhostBetaSchedule(90), GhostAlphaSchedule(90))
        + [("learning_rate", TrainingRecipe(lr_schedule="step", lr_drop_epochs=(90, 135))
                                .learning_rate_at)])
    model.fit(..., callbacks=[callback, keras.callbacks.TensorBoard(logdir)])

Place it before TensorBoard/CSVLogger in `callbacks` so they see the logged values.
"""
import gin
import keras

from tf_lottery.errors import ConfigError
from tf_lottery.layers.ghosts import ghost_modules

LEARNING_RATE = "learning_rate"


def _is_variable(target):
    return hasattr(target, "assign") and hasattr(target, "dtype")


def _target_name(target):
    if isinstance(target, str):
        return target
    if _is_variable(target):
        return getattr(target, "path", None) or target.name
    return getattr(target, "__qualname__", None) or type(target).__name__


@gin.configurable
class ScheduleCallback(keras.callbacks.Callback):
    """Sets each target to `schedule(epoch)` at the start of every epoch (and every batch).

    Args:
      schedules: a dict {target: schedule} or a list of (target, schedule) pairs (Keras
        variables are unhashable, so pass them as pairs). A target is a variable (assigned), a
        callable setter (called with the value), the string "learning_rate" (the optimizer's
        learning-rate variable, found at train begin) or a tuple/list of targets sharing one
        schedule. A schedule is a callable of the (float) epoch.
      per_batch: also apply the schedules at every batch, at the fractional epoch
        epoch + batch / steps_per_epoch.
      steps_per_epoch: batches per epoch for `per_batch`; defaults to the count `fit` reports.

    At the end of each epoch it writes the value each schedule had at that epoch's start into
    `logs` under the schedule's `log_name` (else the target's name), so History, CSVLogger and
    TensorBoard record it.
    """

    def __init__(self, schedules, per_batch=False, steps_per_epoch=None):
        super().__init__()
        pairs = list(schedules.items()) if isinstance(schedules, dict) else list(schedules)
        self._bindings = []
        used_names = set()
        for pair in pairs:
            if len(pair) != 2 or not callable(pair[1]):
                raise ConfigError(f"each schedule binding must be (target, callable schedule), "
                                  f"got {pair!r}")
            target, schedule = pair
            targets = list(target) if isinstance(target, (list, tuple)) else [target]
            if not targets:
                continue
            name = getattr(schedule, "log_name", None) or _target_name(targets[0])
            base, suffix = name, 1
            while name in used_names:
                name, suffix = f"{base}_{suffix}", suffix + 1
            used_names.add(name)
            self._bindings.append((targets, schedule, name))
        self.per_batch = per_batch
        self.steps_per_epoch = steps_per_epoch
        self._epoch = 0
        self._epoch_values = {}

    def _setter(self, target):
        if isinstance(target, str):
            if target != LEARNING_RATE:
                raise ConfigError(f"unknown schedule target {target!r}; the only named target "
                                  f"is {LEARNING_RATE!r}")
            optimizer = getattr(self.model, "optimizer", None)
            variable = getattr(optimizer, "learning_rate", None)
            if not _is_variable(variable):
                raise ConfigError("the model's optimizer has no learning-rate variable (compile "
                                  "with a float learning rate, not a LearningRateSchedule)")
            return variable.assign
        if _is_variable(target):
            return target.assign
        if callable(target):
            return target
        raise ConfigError(f"schedule target must be a variable, a setter or "
                          f"{LEARNING_RATE!r}, got {target!r}")

    def apply(self, epoch):
        """Set every target to its schedule's value at `epoch` (float); returns {name: value}."""
        values = {}
        for targets, schedule, name in self._bindings:
            value = float(schedule(epoch))
            for target in targets:
                self._setter(target)(value)
            values[name] = value
        return values

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_values = self.apply(float(epoch))

    def on_train_batch_begin(self, batch, logs=None):
        if not self.per_batch or batch == 0:
            return
        steps = self.steps_per_epoch or self.params.get("steps")
        if not steps:
            raise ConfigError("per_batch schedules need steps_per_epoch (fit could not tell)")
        self.apply(self._epoch + min(batch / steps, 1.0))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self._epoch_values)


def bind_ghost_schedules(model, beta_schedule=None, alpha_schedule=None):
    """[(targets, schedule)] pairs for ScheduleCallback: β of every GhostActivation of `model`
    (through its `set_beta`, so β = inf switches to ReLU) and α of every GhostSkip."""
    activations, skips = ghost_modules(model)
    bindings = []
    if beta_schedule is not None and activations:
        bindings.append((tuple(layer.set_beta for layer in activations), beta_schedule))
    if alpha_schedule is not None and skips:
        bindings.append((tuple(layer.alpha for layer in skips), alpha_schedule))
    return bindings

