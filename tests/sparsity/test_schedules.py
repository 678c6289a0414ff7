import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.errors import ConfigError
from tf_lottery.sparsity import ConstantSparsity, PolynomialDecay


def _values(schedule, steps):
    should, sparsity = zip(*(schedule(step) for step in steps))
    return [bool(s) for s in should], [float(s) for s in sparsity]


def test_constant_sparsity_prunes_every_frequency_steps_in_its_window():
    schedule = ConstantSparsity(0.6, begin_step=2, end_step=10, frequency=3)
    should, sparsity = _values(schedule, range(0, 13))
    assert [step for step, s in zip(range(13), should) if s] == [2, 5, 8]
    np.testing.assert_allclose(sparsity, 0.6)


def test_constant_sparsity_without_end_prunes_forever():
    schedule = ConstantSparsity(0.5, begin_step=0, frequency=100)
    should, _ = _values(schedule, [0, 1, 100, 99, 10**9])
    assert should == [True, False, True, False, True]


def test_polynomial_decay_values_by_hand():
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(t_end - t0))^3, clamped outside [t0, t_end]
    schedule = PolynomialDecay(0.1, 0.9, begin_step=10, end_step=20, frequency=5)
    should, sparsity = _values(schedule, [5, 10, 12, 15, 20, 25])
    np.testing.assert_allclose(sparsity, [0.1, 0.1, 0.9 - 0.8 * 0.8 ** 3, 0.8, 0.9, 0.9],
                               rtol=1e-6)
    assert should == [False, True, False, True, True, False]
    power_one = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=4, power=1, frequency=1)
    np.testing.assert_allclose(float(power_one(1)[1]), 0.125, rtol=1e-6)


def test_schedules_evaluate_in_graph_under_jit():
    schedule = PolynomialDecay(0.1, 0.9, begin_step=10, end_step=20, frequency=5)
    compiled = tf.function(lambda step: schedule(step), jit_compile=True)
    should, sparsity = compiled(tf.constant(15, tf.int64))
    assert bool(should) and abs(float(sparsity) - 0.8) < 1e-6


def test_config_round_trip():
    for schedule in (ConstantSparsity(0.3, 4, 40, 2), PolynomialDecay(0.1, 0.7, 3, 9, 2, 3)):
        again = type(schedule).from_config(schedule.get_config())
        assert again.get_config() == schedule.get_config()


@pytest.mark.parametrize("make, argument", [
    (lambda: ConstantSparsity(1.0, 0), "target_sparsity"),
    (lambda: ConstantSparsity(-0.1, 0), "target_sparsity"),
    (lambda: PolynomialDecay(0.0, 1.2, 0, 10), "final_sparsity"),
    (lambda: PolynomialDecay(1.0, 0.5, 0, 10), "initial_sparsity"),
    (lambda: PolynomialDecay(0.0, 0.5, 10, 10), "end_step"),
    (lambda: PolynomialDecay(0.0, 0.5, 10, -1), "end_step"),
    (lambda: ConstantSparsity(0.5, 5, end_step=3), "end_step"),
    (lambda: ConstantSparsity(0.5, 0, frequency=0), "frequency"),
    (lambda: PolynomialDecay(0.0, 0.5, 0, 10, frequency=0), "frequency"),
    (lambda: ConstantSparsity(0.5, -1), "begin_step"),
])
def test_bad_arguments_raise_one_config_error_naming_them(make, argument):
    with pytest.raises(ConfigError, match=argument):
        make()
