"""A training recipe: optimizer, learning-rate schedule, epochs and loss, in one gin-configurable
place (the hyperparameters a paper states for one round of training)."""
import gin
import keras

from tf_lottery.errors import ConfigError, check_fraction, check_positive

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "step")


@gin.configurable
class TrainingRecipe:
    """Hyperparameters of one round of training.

    Args:
      optimizer: 'sgd' (with momentum/nesterov), 'adam' or 'adamw'.
      learning_rate: the initial (peak, after warm-up) learning rate.
      momentum: SGD momentum.
      weight_decay: decoupled weight decay (Keras semantics: w -= lr·wd·w each step).
      epochs: epochs per round.
      lr_schedule: 'constant', 'cosine' (to 0 over the round) or 'step' (×lr_drop_factor at
        each epoch in lr_drop_epochs).
      warmup_epochs: linear warm-up from 0 before the schedule (Goyal et al. 2017).
      label_smoothing: α of y(1-α)+α/K in the cross-entropy.
      jit_compile: compile the training step with XLA; 'auto' = only when a GPU or TPU is
        present (on CPU, XLA's convolutions are several times slower than TensorFlow's).
    """

    def __init__(self, optimizer="sgd", learning_rate=0.1, momentum=0.9, nesterov=False,
                 weight_decay=1e-4, epochs=10, lr_schedule="cosine", lr_drop_epochs=(),
                 lr_drop_factor=0.1, warmup_epochs=0, label_smoothing=0.0, jit_compile="auto"):
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"TrainingRecipe.optimizer must be one of {OPTIMIZERS}, "
                              f"got {optimizer!r}")
        if lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"TrainingRecipe.lr_schedule must be one of {LR_SCHEDULES}, "
                              f"got {lr_schedule!r}")
        if int(epochs) < 1:
            raise ConfigError(f"TrainingRecipe.epochs must be >= 1, got {epochs!r}")
        check_positive("TrainingRecipe.learning_rate", learning_rate)
        self.optimizer = optimizer
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay or 0.0)
        self.epochs = int(epochs)
        self.lr_schedule = lr_schedule
        self.lr_drop_epochs = tuple(int(e) for e in lr_drop_epochs)
        self.lr_drop_factor = float(lr_drop_factor)
        self.warmup_epochs = int(warmup_epochs)
        self.label_smoothing = check_fraction("TrainingRecipe.label_smoothing", label_smoothing)
        if jit_compile == "auto":
            import tensorflow as tf

            jit_compile = bool(tf.config.list_physical_devices("GPU")
                               or tf.config.list_physical_devices("TPU"))
        self.jit_compile = bool(jit_compile)

    def learning_rate_at(self, epoch):
        """The learning rate at (fractional) epoch `epoch` of a round."""
        if epoch < self.warmup_epochs:
            return self.learning_rate * epoch / self.warmup_epochs
        if self.lr_schedule == "cosine":
            import math

            span = max(self.epochs - self.warmup_epochs, 1e-12)
            progress = min(max(epoch - self.warmup_epochs, 0.0) / span, 1.0)
            return 0.5 * self.learning_rate * (1 + math.cos(math.pi * progress))
        if self.lr_schedule == "step":
            drops = sum(1 for e in self.lr_drop_epochs if epoch >= e)
            return self.learning_rate * self.lr_drop_factor ** drops
        return self.learning_rate

    def schedule(self, steps_per_epoch, constant_learning_rate=None):
        """A Keras LearningRateSchedule of the optimizer step (or a constant)."""
        if constant_learning_rate is not None:
            return float(constant_learning_rate)
        if self.lr_schedule == "constant" and not self.warmup_epochs:
            return self.learning_rate
        warmup = self.warmup_epochs * steps_per_epoch
        if self.lr_schedule == "cosine":
            decay_steps = max(self.epochs * steps_per_epoch - warmup, 1)
            if warmup:
                return keras.optimizers.schedules.CosineDecay(
                    0.0, decay_steps, warmup_target=self.learning_rate, warmup_steps=warmup)
            return keras.optimizers.schedules.CosineDecay(self.learning_rate, decay_steps)
        return EpochLearningRate(self, steps_per_epoch)

    def make_optimizer(self, steps_per_epoch, constant_learning_rate=None,
                       exclude_from_weight_decay=()):
        """A fresh optimizer (no momentum state) following this recipe."""
        lr = self.schedule(steps_per_epoch, constant_learning_rate)
        if self.optimizer == "sgd":
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
    """A recipe's epoch-based learning rate (warm-up, steps) as a schedule of the optimizer step."""

    def __init__(self, recipe, steps_per_epoch):
        self.recipe = recipe
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        import tensorflow as tf

        r = self.recipe
        epoch = tf.cast(step, tf.float32) / self.steps_per_epoch
        lr = tf.constant(r.learning_rate, tf.float32)
        if r.lr_schedule == "step":
            drops = tf.add_n([tf.cast(epoch >= e, tf.float32) for e in r.lr_drop_epochs]
                             or [tf.constant(0.0)])
            lr = lr * tf.pow(r.lr_drop_factor, drops)
        if r.warmup_epochs:
            lr = lr * tf.minimum(epoch / r.warmup_epochs, 1.0)
        return lr

    def get_config(self):
        return {"steps_per_epoch": self.steps_per_epoch}
