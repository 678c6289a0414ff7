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
    code). Distillation needs a teacher: see `Distiller` / `distillation_loss`.
    """
    if name == "cross_entropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if name == "label_smoothing":
        return LabelSmoothingCrossEntropy(label_smoothing)
    raise ConfigError(f"unknown loss {name!r}; choose one of {LOSSES} (distillation: use "
                      f"tf_lottery.training.losses.Distiller)")


class Distiller(keras.Model):
    """Trains `student` on `distillation_loss` against a frozen `teacher` (both output logits).

    `fit(x, y)` with integer labels y; the teacher runs in inference mode on the same x and is
    made non-trainable. Predicting/evaluating returns the student's logits; save the student.

        distiller = Distiller(student, teacher, temperature=4.0, alpha=0.9)
        distiller.compile(optimizer="sgd", metrics=["sparse_categorical_accuracy"])
        distiller.fit(train_dataset, epochs=...)
    """

    def __init__(self, student, teacher, temperature=4.0, alpha=0.9, **kw):
        super().__init__(**kw)
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r}")
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature = float(temperature)
        self.alpha = check_fraction("alpha", alpha, allow_one=True)

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        teacher_logits = self.teacher(x, training=False)
        per_example = distillation_loss(y_pred, teacher_logits, y, self.temperature, self.alpha)
        if sample_weight is not None:
            weights = ops.reshape(ops.cast(sample_weight, per_example.dtype),
                                  ops.shape(per_example))
            loss = ops.sum(per_example * weights) / ops.maximum(ops.sum(weights), 1e-12)
        else:
            loss = ops.mean(per_example)
        if self.losses:
            loss = loss + ops.sum(ops.stack(self.losses))
        # scaled by 1/replicas under tf.distribute, as Keras scales its own losses
        return self._aggregate_additional_loss(loss)
