"""A training recipe: optimizer, learning-rate schedule, epochs and loss, in one gin-configurable
place (the hyperparameters a paper states for one round of training)."""
import math

import gin
import keras

from tf_lottery.errors import ConfigError, check_choice, check_fraction, check_positive
from tf_lottery.training.optimizers import PyTorchAdam, PyTorchSGD

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "step")
LR_UPDATES = ("step", "epoch")
WEIGHT_DECAY_MODES = ("coupled", "decoupled")


@gin.configurable
class TrainingRecipe:
    """Hyperparameters of one round of training.

    Args:
      optimizer: 'sgd' (with momentum/nesterov), 'adam' or 'adamw'.
      learning_rate: the initial (peak, after warm-up) learning rate.
      momentum: SGD momentum.
      weight_decay: the papers' (PyTorch's) weight decay. How it acts depends on
        `weight_decay_mode`.
      weight_decay_mode: 'coupled' (the default for 'sgd' and 'adam'): PyTorch's rule, an L2 term
        wd·w added to the gradient before momentum, with PyTorch's SGD/Adam updates
        (training/optimizers.py: PyTorchSGD, PyTorchAdam), so torch.optim.SGD(weight_decay=wd)
        in a paper's code is weight_decay=wd here. 'decoupled' (the only mode of 'adamw'):
        Keras' own optimizers, w ← w − lr·wd·w outside momentum (AdamW, Loshchilov & Hutter).
      epochs: epochs per round.
      lr_schedule: 'constant', 'cosine' (to 0 over the round) or 'step' (×lr_drop_factor at
        each epoch in lr_drop_epochs).
      lr_update: 'step' (the schedule moves every optimizer step) or 'epoch' (it moves once per
        epoch and holds within it, as PyTorch code that calls `scheduler.step()` once per epoch
        does, e.g. edge-popup's and soft iEP's cosine: epoch e of E trains at
        γ·½(1 + cos(πe/E)), and a warm-up epoch e at γ·(e+1)/warmup_epochs). With few epochs
        per round the two differ a lot: the last epoch of a 2-epoch cosine round trains at γ/2
        per epoch, near 0 per step.
      warmup_epochs: linear warm-up before the schedule (Goyal et al. 2017).
      label_smoothing: α of y(1-α)+α/K in the cross-entropy.
      jit_compile: compile the training step with XLA; 'auto' = only when a GPU or TPU is
        present (on CPU, XLA's convolutions are several times slower than TensorFlow's).
    """

    def __init__(self, optimizer="sgd", learning_rate=0.1, momentum=0.9, nesterov=False,
                 weight_decay=1e-4, weight_decay_mode=None, epochs=10, lr_schedule="cosine",
                 lr_drop_epochs=(), lr_drop_factor=0.1, lr_update="step", warmup_epochs=0,
                 label_smoothing=0.0, jit_compile="auto"):
        check_choice("TrainingRecipe.optimizer", optimizer, OPTIMIZERS)
        check_choice("TrainingRecipe.lr_schedule", lr_schedule, LR_SCHEDULES)
        check_choice("TrainingRecipe.lr_update", lr_update, LR_UPDATES)
        if int(epochs) < 1:
            raise ConfigError(f"TrainingRecipe.epochs must be >= 1, got {epochs!r}")
        check_positive("TrainingRecipe.learning_rate", learning_rate)
        if weight_decay_mode is None:
            weight_decay_mode = "decoupled" if optimizer == "adamw" else "coupled"
        check_choice("TrainingRecipe.weight_decay_mode", weight_decay_mode, WEIGHT_DECAY_MODES)
        if optimizer == "adamw" and weight_decay_mode != "decoupled":
            raise ConfigError("TrainingRecipe.optimizer='adamw' decays decoupled by definition; "
                              "use optimizer='adam' for PyTorch's coupled L2 weight decay")
        if not (math.isfinite(float(weight_decay or 0.0)) and float(weight_decay or 0.0) >= 0):
            raise ConfigError(f"TrainingRecipe.weight_decay must be a finite number >= 0, got "
                              f"{weight_decay!r}")
        self.optimizer = optimizer
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay or 0.0)
        self.weight_decay_mode = weight_decay_mode
        self.epochs = int(epochs)
        self.lr_schedule = lr_schedule
        self.lr_drop_epochs = tuple(int(e) for e in lr_drop_epochs)
        self.lr_drop_factor = float(lr_drop_factor)
        self.lr_update = lr_update
        self.warmup_epochs = int(warmup_epochs)
        self.label_smoothing = check_fraction("TrainingRecipe.label_smoothing", label_smoothing)
        if jit_compile == "auto":
            import tensorflow as tf

            jit_compile = bool(tf.config.list_physical_devices("GPU")
                               or tf.config.list_physical_devices("TPU"))
        self.jit_compile = bool(jit_compile)

    def learning_rate_at(self, epoch):
        """The learning rate at (fractional) epoch `epoch` of a round."""
        if self.lr_update == "epoch":
            epoch = math.floor(epoch + 1e-9)
            if epoch < self.warmup_epochs:
                return self.learning_rate * (epoch + 1) / self.warmup_epochs
        if epoch < self.warmup_epochs:
            return self.learning_rate * epoch / self.warmup_epochs
        if self.lr_schedule == "cosine":
            span = max(self.epochs - self.warmup_epochs, 1e-12)
            progress = min(max(epoch - self.warmup_epochs, 0.0) / span, 1.0)
            return 0.5 * self.learning_rate * (1 + math.cos(math.pi * progress))
        if self.lr_schedule == "step":
            drops = sum(1 for e in self.lr_drop_epochs if epoch >= e)
            return self.learning_rate * self.lr_drop_factor ** drops
        return self.learning_rate

    def schedule(self, steps_per_epoch, constant_learning_rate=None, start_step=0):
        """A Keras LearningRateSchedule of the optimizer step (or a constant); with
        `start_step` k, the schedule from step k on (StepOffsetSchedule) for an optimizer whose
        own step counter starts at 0 (IMP's weight rewinding trains steps k..T)."""
        if constant_learning_rate is not None:
            return float(constant_learning_rate)
        schedule = self._schedule(steps_per_epoch)
        if start_step and isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            return StepOffsetSchedule(schedule, start_step)
        return schedule

    def _schedule(self, steps_per_epoch):
        if self.lr_schedule == "constant" and not self.warmup_epochs:
            return self.learning_rate
        warmup = self.warmup_epochs * steps_per_epoch
        if self.lr_schedule == "cosine" and self.lr_update == "step":
            decay_steps = max(self.epochs * steps_per_epoch - warmup, 1)
            if warmup:
                return keras.optimizers.schedules.CosineDecay(
                    0.0, decay_steps, warmup_target=self.learning_rate, warmup_steps=warmup)
            return keras.optimizers.schedules.CosineDecay(self.learning_rate, decay_steps)
        return EpochLearningRate(self, steps_per_epoch)

    def make_optimizer(self, steps_per_epoch, constant_learning_rate=None,
                       exclude_from_weight_decay=(), start_step=0):
        """A fresh optimizer (no momentum state) following this recipe (its learning rate
        `schedule(steps_per_epoch, constant_learning_rate, start_step)`); variables whose name
        contains an entry of `exclude_from_weight_decay` are not decayed (either mode)."""
        lr = self.schedule(steps_per_epoch, constant_learning_rate, start_step)
        if self.weight_decay_mode == "coupled":
            if self.optimizer == "sgd":
                opt = PyTorchSGD(lr, momentum=self.momentum, nesterov=self.nesterov,
                                 weight_decay=self.weight_decay)
            else:
                opt = PyTorchAdam(lr, weight_decay=self.weight_decay)
        elif self.optimizer == "sgd":
            opt = keras.optimizers.SGD(lr, momentum=self.momentum, nesterov=self.nesterov,
                                       weight_decay=self.weight_decay or None)
        elif self.optimizer == "adam":
            opt = keras.optimizers.Adam(lr, weight_decay=self.weight_decay or None)
        else:
            opt = keras.optimizers.AdamW(lr, weight_decay=self.weight_decay)
        if exclude_from_weight_decay:
            opt.exclude_from_weight_decay(var_names=list(exclude_from_weight_decay))
        return opt

    def make_loss(self):
        """Cross-entropy from logits with integer labels (label smoothing when set)."""
        if self.label_smoothing:
            from tf_lottery.training.losses import LabelSmoothingCrossEntropy

            return LabelSmoothingCrossEntropy(self.label_smoothing)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@keras.saving.register_keras_serializable("tf_lottery")
class EpochLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A recipe's epoch-based learning rate (warm-up, step drops; cosine when it moves once per
    epoch) as a schedule of the optimizer step: the in-graph twin of `learning_rate_at`."""

    def __init__(self, recipe, steps_per_epoch):
        self.recipe = recipe
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        import tensorflow as tf

        r = self.recipe
        epoch = tf.cast(step, tf.float32) / self.steps_per_epoch
        warming = epoch
        if r.lr_update == "epoch":
            epoch = tf.floor(tf.cast(step, tf.float32) / self.steps_per_epoch + 1e-6)
            warming = epoch + 1.0
        lr = tf.constant(r.learning_rate, tf.float32)
        if r.lr_schedule == "step":
            drops = tf.add_n([tf.cast(epoch >= e, tf.float32) for e in r.lr_drop_epochs]
                             or [tf.constant(0.0)])
            lr = lr * tf.pow(r.lr_drop_factor, drops)
        elif r.lr_schedule == "cosine":
            span = max(r.epochs - r.warmup_epochs, 1e-12)
            progress = tf.clip_by_value((epoch - r.warmup_epochs) / span, 0.0, 1.0)
            lr = lr * 0.5 * (1.0 + tf.cos(math.pi * progress))
        if r.warmup_epochs:
            lr = lr * tf.minimum(warming / r.warmup_epochs, 1.0)
        return lr

    def get_config(self):
        return {"steps_per_epoch": self.steps_per_epoch}


@keras.saving.register_keras_serializable("tf_lottery")
class StepOffsetSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """schedule(step + offset): the learning rate of a run resumed at step `offset` (weight
    rewinding trains steps k..T), while the optimizer's own counter (Adam's bias correction)
    starts from 0 as for any fresh optimizer."""

    def __init__(self, schedule, offset):
        self.schedule = schedule
        self.offset = int(offset)

    def __call__(self, step):
        return self.schedule(step + self.offset)

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "offset": self.offset}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["schedule"]), config["offset"])
