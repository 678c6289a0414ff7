import keras
import numpy as np
import pytest

from tf_lottery.analysis import (ActivationSparsityCallback, DyingRatioCallback,
                                 GradientFlowCallback, HessianEigenvalueCallback, dying_ratio,
                                 gradient_flow)
from tf_lottery.analysis.callbacks import epoch_records
from tf_lottery.errors import ConfigError
from tf_lottery.layers import MaskedDense, TopKScores


class _LogsSeen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = {}

    def on_epoch_end(self, epoch, logs=None):
        self.seen[epoch] = dict(logs)


def _fit(callbacks, epochs=4):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 4)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    model = keras.Sequential([keras.Input((4,)),
                              MaskedDense(8, activation="relu", name="h",
                                          mask_rule=TopKScores(0.5)),
                              MaskedDense(3, name="out")])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    seen = _LogsSeen()
    history = model.fit(x, y, batch_size=8, epochs=epochs, verbose=0,
                        callbacks=[*callbacks, seen])
    return model, history, seen, (x[:8], y[:8])


def test_records_and_logs_on_every_second_epoch():
    rng = np.random.default_rng(1)
    batch = (rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 3, 8))
    callbacks = [HessianEigenvalueCallback(batch, every_n_epochs=2, max_iterations=5),
                 ActivationSparsityCallback(batch[0], every_n_epochs=2),
                 GradientFlowCallback([batch, batch], every_n_epochs=2),
                 DyingRatioCallback(every_n_epochs=1)]
    model, history, seen, _ = _fit(callbacks)
    keys = {"hessian_top_eigenvalue": callbacks[0], "activation_sparsity": callbacks[1],
            "activation_sparsity/h": callbacks[1], "gradient_flow": callbacks[2]}
    for key, callback in keys.items():
        assert [r["epoch"] for r in callback.records] == [1, 3]
        assert history.history[key] == [r[key] for r in callback.records]
        assert key not in seen.seen[0] and key not in seen.seen[2]
        assert seen.seen[3][key] == callback.records[-1][key]
    dying = callbacks[3]
    assert [r["epoch"] for r in dying.records] == [0, 1, 2, 3]
    ratios = history.history["dying_ratio"]
    assert all(later <= earlier for earlier, later in zip(ratios, ratios[1:]))
    assert ratios[-1] == pytest.approx(dying_ratio(model))
    assert 0.0 <= history.history["activation_sparsity"][-1] <= 1.0
    assert callbacks[2].records[-1]["gradient_flow"] == pytest.approx(
        gradient_flow(model, *batch), rel=1e-5)  # compiled loss, final weights


def test_every_n_epochs_must_be_positive():
    with pytest.raises(ConfigError):
        DyingRatioCallback(every_n_epochs=0)


def test_epoch_records_merge_the_analysis_callbacks_by_epoch():
    first, second = DyingRatioCallback(), DyingRatioCallback(every_n_epochs=2)
    first.records = [{"epoch": 0, "a": 1.0}, {"epoch": 1, "a": 2.0}]
    second.records = [{"epoch": 1, "b": 3.0}]
    plain = keras.callbacks.Callback()
    plain.records = [{"epoch": 0, "ignored": 1.0}]  # not an AnalysisCallback
    assert epoch_records([second, plain, first]) == [{"epoch": 0, "a": 1.0},
                                                     {"epoch": 1, "a": 2.0, "b": 3.0}]
    assert epoch_records([plain]) == []
