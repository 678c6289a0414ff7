import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.errors import ConfigError
from tf_lottery.training.losses import (Distillation, LabelSmoothingCrossEntropy,
                                        distillation_loss, label_smoothing_cross_entropy,
                                        make_loss)
from tf_lottery.training.sparse_model import SparseModel

LN2, LN3 = math.log(2), math.log(3)


def test_label_smoothing_by_hand_three_classes():
    # logits ln(1, 2, 3): p = (1/6, 2/6, 3/6); label 2, α = 0.3, K = 3: y_LS = (0.1, 0.1, 0.8)
    logits = np.array([[0.0, LN2, LN3]], np.float32)
    expected = -(0.1 * math.log(1 / 6) + 0.1 * math.log(2 / 6) + 0.8 * math.log(3 / 6))
    got = label_smoothing_cross_entropy(np.array([2]), logits, label_smoothing=0.3)
    np.testing.assert_allclose(got, [expected], rtol=1e-6)
    plain = label_smoothing_cross_entropy(np.array([[2]]), logits, label_smoothing=0.0)
    np.testing.assert_allclose(plain, [LN2], rtol=1e-6)


def test_label_smoothing_loss_two_classes_batch_mean():
    # p = (1/4, 3/4); label 1, α = 0.2, K = 2: y_LS = (0.1, 0.9); label 0: y_LS = (0.9, 0.1)
    logits = np.array([[0.0, LN3], [0.0, LN3]], np.float32)
    first = 0.1 * math.log(4) + 0.9 * math.log(4 / 3)
    second = 0.9 * math.log(4) + 0.1 * math.log(4 / 3)
    loss = LabelSmoothingCrossEntropy(0.2)(np.array([1, 0]), logits)
    assert float(loss) == pytest.approx((first + second) / 2, rel=1e-6)
    keras_cce = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)
    assert float(loss) == pytest.approx(float(keras_cce(np.eye(2)[[1, 0]], logits)), rel=1e-6)


def test_make_loss():
    logits = np.array([[0.0, LN3]], np.float32)
    assert float(make_loss("cross_entropy")(np.array([1]), logits)) == pytest.approx(
        math.log(4 / 3), rel=1e-6)
    smoothed = make_loss("label_smoothing", label_smoothing=0.2)
    assert isinstance(smoothed, LabelSmoothingCrossEntropy) and smoothed.label_smoothing == 0.2
    with pytest.raises(ConfigError):
        make_loss("distillation")
    with pytest.raises(ConfigError):
        make_loss("label_smoothing", label_smoothing=1.5)


def test_distillation_by_hand():
    # τ = 2: softmax(t/τ) = (3/4, 1/4), softmax(s/τ) = (1/4, 3/4): KL = ½ ln 3; τ²·KL = 2 ln 3.
    # softmax(s) = (1/10, 9/10): CE(label 1) = ln(10/9).
    student = np.array([[0.0, 2 * LN3]], np.float32)
    teacher = np.array([[2 * LN3, 0.0]], np.float32)
    got = distillation_loss(student, teacher, np.array([1]), temperature=2.0, alpha=0.7)
    np.testing.assert_allclose(got, [0.7 * 2 * LN3 + 0.3 * math.log(10 / 9)], rtol=1e-6)
    only_hard = distillation_loss(student, teacher, np.array([1]), temperature=2.0, alpha=0.0)
    np.testing.assert_allclose(only_hard, [math.log(10 / 9)], rtol=1e-6)
    same = distillation_loss(student, student, np.array([1]), temperature=5.0, alpha=1.0)
    np.testing.assert_allclose(same, [0.0], atol=1e-6)


def test_distillation_gradient_reaches_student_only():
    student = tf.Variable([[0.3, -0.2, 0.1]])
    teacher = tf.Variable([[1.0, 0.0, -1.0]])
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_mean(distillation_loss(student, teacher, np.array([0]), 3.0, 0.5))
    assert tape.gradient(loss, teacher) is None
    assert np.abs(tape.gradient(loss, student).numpy()).sum() > 0
    with pytest.raises(ConfigError):
        distillation_loss(student, teacher, np.array([0]), temperature=0.0)


def _mlp(seed):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(6, activation="relu",
                                kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


def test_distillation_hook_trains_student_against_frozen_teacher():
    student, teacher = _mlp(1), _mlp(2)
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    student_weights = [w.copy() for w in student.get_weights()]
    model = SparseModel(student)
    model.distillation = Distillation(teacher, temperature=2.0, alpha=0.6)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 4)).astype(np.float32), rng.integers(0, 3, size=(8,))
    expected = float(np.mean(distillation_loss(student(x), teacher(x), y, 2.0, 0.6)))
    assert float(model.compute_loss(x, y, model(x))) == pytest.approx(expected, rel=1e-6)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert history.history["loss"][1] < history.history["loss"][0]
    for before, after in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert any(not np.array_equal(b, a) for b, a in zip(student_weights, student.get_weights()))
    # the teacher is not part of the student: evaluation is the plain cross-entropy
    assert len(model.weights) == len(student.weights)
    plain = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, model(x),
                                                                       from_logits=True)))
    assert model.evaluate(x, y, verbose=0) == pytest.approx(plain, rel=1e-5)
