import pytest

from tf_lottery.config import parse_config
from tf_lottery.errors import ConfigError


def test_unknown_parameter_names_the_binding_and_the_closest_valid_one():
    with pytest.raises(ConfigError) as e:
        parse_config(bindings=["TrainingRecipe.epoch = 3"])
    assert str(e.value) == ("TrainingRecipe has no parameter 'epoch'; did you mean "
                            "'TrainingRecipe.epochs'?")


def test_unknown_configurable_suggests_the_closest_one():
    with pytest.raises(ConfigError, match="'EdgePopupSerch'.*'EdgePopupSearch'"):
        parse_config(bindings=["EdgePopupSerch.cycles = 3"])


def test_missing_gin_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read gin file"):
        parse_config(files=[str(tmp_path / "nope.gin")])


def test_includes_resolve_next_to_the_including_file():
    parse_config(files=["gin_configs/soft_iep.gin"])
    import gin

    assert gin.query_parameter("EdgePopupSearch.variant") == "soft_lr"
    assert gin.query_parameter("build_model.use_bias") is False
    gin.clear_config()
