import keras
import numpy as np
import pytest

from tf_lottery.errors import ConfigError
from tf_lottery.models import sparsify
from tf_lottery.sparsity import erdos_renyi_densities, layer_densities


def _two_dense():
    inputs = keras.Input((10,))
    x = keras.layers.Dense(20, name="fc")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def test_erk_of_two_dense_layers_by_hand():
    # fc: 10x20, n = 200, raw = 30/200; out: 20x2, n = 40, raw = 22/40. s = 0.5:
    # eps = (100 + 20)/(0.15·200 + 0.55·40) = 120/52 -> out's density 1.27 > 1: out dense,
    # eps = (100 - 20)/30, fc's density = 0.15·80/30 = 0.4 (kept: 80 + 40 = 0.5·240)
    densities = layer_densities(_two_dense(), 0.5, "erk")
    assert densities == pytest.approx({"fc": 0.4, "out": 1.0})
    # the masked copy has the same prunable layers and densities
    assert layer_densities(sparsify(_two_dense()), 0.5) == pytest.approx(densities)


def test_er_and_erk_differ_on_conv_kernels_by_hand():
    shapes = {"conv": (3, 3, 2, 4), "fc": (8, 4)}
    # kept at s = 0.5: 36 + 16 = 52. ERK raw: 12/72, 12/32 -> eps = 52/24
    erk = erdos_renyi_densities(shapes, 0.5)
    assert erk == pytest.approx({"conv": 52 / 24 / 6, "fc": 52 / 24 * 0.375})
    # ER raw: (2 + 4)/8, (8 + 4)/32 -> eps = 52/66
    er = erdos_renyi_densities(shapes, 0.5, kernel=False)
    assert er == pytest.approx({"conv": 52 / 66 * 0.75, "fc": 52 / 66 * 0.375})
    for densities in (erk, er):
        assert 72 * densities["conv"] + 32 * densities["fc"] == pytest.approx(52)


def test_uniform_dict_and_exclude():
    model = _two_dense()
    assert layer_densities(model, 0.3, "uniform") == pytest.approx({"fc": 0.7, "out": 0.7})
    assert layer_densities(model, 0.3, {"out": 0.0}) == pytest.approx({"fc": 0.7, "out": 1.0})
    assert layer_densities(model, 0.3, "erk", exclude=["out"]) == pytest.approx({"fc": 0.7})


def test_global_magnitude_densities_follow_the_weights():
    model = _two_dense()
    fc, out = model.get_layer("fc"), model.get_layer("out")
    fc.kernel.assign(np.full((10, 20), 0.1, "float32"))
    out.kernel.assign(np.full((20, 2), 1.0, "float32"))
    # keep 120 of 240: all 40 of out, then the first 80 of fc's equal weights
    assert layer_densities(model, 0.5, "global") == pytest.approx({"fc": 0.4, "out": 1.0})


@pytest.mark.parametrize("kwargs, argument", [
    (dict(sparsity=1.0), "sparsity"),
    (dict(sparsity=-0.2), "sparsity"),
    (dict(sparsity=0.5, distribution="ekr"), "distribution"),
    (dict(sparsity=0.5, distribution={"fc": 1.0}), "distribution"),
    (dict(sparsity=0.5, distribution={"nope": 0.5}), "distribution"),
    (dict(sparsity=0.5, exclude=["nope"]), "exclude"),
])
def test_bad_input_is_one_config_error_naming_the_argument(kwargs, argument):
    with pytest.raises(ConfigError, match=argument):
        layer_densities(_two_dense(), **kwargs)


def test_unknown_distribution_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="did you mean 'erk'"):
        layer_densities(_two_dense(), 0.5, "Erk_")
