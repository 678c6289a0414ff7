"""Classification losses on logits with sparse integer labels: plain and label-smoothed
cross-entropy, and knowledge distillation from a teacher's logits.

* Label smoothing (Szegedy et al. 2016; ToST §2.3): target y_k^LS = y_k(1 − α) + α/K, loss
  −Σ_k y_k^LS log softmax(z)_k. (The ToST code instead puts 1 − α on the label and α/(K − 1)
  on every other class; we follow the paper's formula, which is also Keras'.)
* Distillation (Hinton et al. 2015, as in Jaiswal et al. "Spending your winning lottery better",
  §3.2, L_KD = KL(q^τ, p^τ)):
      L = alpha · τ² · KL(softmax(t/τ) ‖ softmax(s/τ)) + (1 − alpha) · CE(y, softmax(s)),
  s the student's and t the teacher's logits; τ² keeps the soft term's gradient scale
  independent of τ (Hinton et al. 2015, §2). The teacher's logits get no gradient.
"""
import gin
import keras
from keras import ops

from tf_lottery.errors import ConfigError, check_fraction


def label_smoothing_cross_entropy(labels, logits, label_smoothing=0.1):
    """Per-example −Σ_k [y_k(1 − α) + α/K] log softmax(logits)_k, α = label_smoothing."""
    log_probs = ops.log_softmax(logits, axis=-1)
    num_classes = ops.shape(logits)[-1]
    labels = ops.reshape(ops.cast(labels, "int32"), ops.shape(logits)[:-1])
    targets = ops.one_hot(labels, num_classes, dtype=log_probs.dtype)
    targets = targets * (1.0 - label_smoothing) + label_smoothing / ops.cast(num_classes,
                                                                             log_probs.dtype)
    return -ops.sum(targets * log_probs, axis=-1)


def distillation_loss(student_logits, teacher_logits, labels, temperature=4.0, alpha=0.9):
    """Per-example α·τ²·KL(softmax(t/τ) ‖ softmax(s/τ)) + (1 − α)·CE(labels, s) (Hinton 2015).

    Args:
      student_logits, teacher_logits: (batch, classes) logits.
      labels: integer class ids (batch,) or (batch, 1).
      temperature: τ > 0 of both softmaxes of the soft term.
      alpha: weight of the distillation term in [0, 1]; 1 − alpha weighs the hard-label CE.
    Returns the per-example losses (batch,); average them for a batch loss.
    """
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}")
    alpha = check_fraction("alpha", alpha, allow_one=True)
    teacher_logits = ops.stop_gradient(ops.cast(teacher_logits, student_logits.dtype))
    teacher_log_probs = ops.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_probs = ops.log_softmax(student_logits / temperature, axis=-1)
    kl = ops.sum(ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
    hard = label_smoothing_cross_entropy(labels, student_logits, label_smoothing=0.0)
    return alpha * temperature ** 2 * kl + (1.0 - alpha) * hard


@keras.saving.register_keras_serializable("tf_lottery")
class LabelSmoothingCrossEntropy(keras.losses.Loss):
    """Keras loss: label-smoothed cross-entropy of logits against sparse integer labels."""

    def __init__(self, label_smoothing=0.1, name="label_smoothing_cross_entropy", **kw):
        super().__init__(name=name, **kw)
        self.label_smoothing = check_fraction("label_smoothing", label_smoothing)

    def call(self, y_true, y_pred):
        return label_smoothing_cross_entropy(y_true, y_pred, self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


LOSSES = ("cross_entropy", "label_smoothing")


@gin.configurable
def make_loss(name="cross_entropy", label_smoothing=0.1):
    """The Keras loss `name` on logits and sparse integer labels.

    'cross_entropy' is keras' SparseCategoricalCrossentropy(from_logits=True);
    'label_smoothing' is LabelSmoothingCrossEntropy(label_smoothing) (ToST uses α = 0.1 in its
    code). Distillation needs a teacher: see `Distillation` (a SparseModel hook).
    """
    if name == "cross_entropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if name == "label_smoothing":
        return LabelSmoothingCrossEntropy(label_smoothing)
    raise ConfigError(f"unknown loss {name!r}; choose one of {LOSSES} (distillation: set "
                      f"SparseModel.distillation = tf_lottery.training.losses.Distillation(...))")


class Distillation:
    """The distillation term for `SparseModel.distillation`: (x, y, y_pred) -> the batch mean of
    `distillation_loss(y_pred, teacher(x), y)`, the teacher run in inference mode.

        model = SparseModel(student_network)
        model.distillation = Distillation(teacher, temperature=4.0, alpha=0.9)
        model.compile(optimizer="sgd", loss=..., metrics=["accuracy"])  # loss: evaluation only
        model.fit(train_dataset, epochs=...)

    The teacher's variables are read, never trained (the loss stops its gradient) and are not
    part of the student's weights or checkpoints.
    """

    def __init__(self, teacher, temperature=4.0, alpha=0.9):
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r}")
        self.teacher = teacher
        self.temperature = float(temperature)
        self.alpha = check_fraction("alpha", alpha, allow_one=True)

    def __call__(self, x, y, y_pred):
        teacher_logits = self.teacher(x, training=False)
        return ops.mean(distillation_loss(y_pred, teacher_logits, y, self.temperature,
                                          self.alpha))
