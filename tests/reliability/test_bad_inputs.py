"""Every bad value of tests/reliability/scenarios.py through the Python API of bin/train
(parse_config, then cli.run.train): one readable TfLotteryError naming the parameter, raised
before anything is written (the workdir is never created). The same cases run through bin/train
itself in bench/reliability.py; tests/cli/test_errors.py runs a few of them there."""
import math
import os

import pytest

from tests.conftest import needs_fashion_mnist
from tests.reliability import scenarios
from tf_lottery.cli import run as cli_run
from tf_lottery.config import parse_config
from tf_lottery.errors import TfLotteryError
from tf_lottery.training.recipe import TrainingRecipe


@pytest.fixture(scope="module")
def gin_files(tmp_path_factory):
    return scenarios.make_gin_files(tmp_path_factory.mktemp("gin"))


@needs_fashion_mnist
@pytest.mark.parametrize("case", scenarios.BAD_STARTS, ids=[c[0] for c in scenarios.BAD_STARTS])
def test_a_bad_start_is_one_readable_line_and_writes_nothing(case, gin_files, tmp_path,
                                                            monkeypatch):
    monkeypatch.chdir(scenarios.ROOT)  # the cases name files relative to the repository
    workdir = tmp_path / "run"
    with pytest.raises(TfLotteryError) as raised:
        parse_config(scenarios.resolve(case[1], gin_files), scenarios.bindings_of(case))
        cli_run.train(str(workdir))
    line = str(raised.value).splitlines()[0]  # what bin/train prints (gin may add a 2nd line)
    assert all(text in line for text in case[3]), line
    assert not os.path.exists(workdir)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0, -1.0, "0.1", None, True])
def test_training_recipe_refuses_a_learning_rate_that_is_not_a_positive_number(value):
    with pytest.raises(TfLotteryError, match=r"TrainingRecipe.learning_rate must be a finite "
                                             r"number > 0, got "):
        TrainingRecipe(learning_rate=value)


@pytest.mark.parametrize("value", ["abc", float("nan"), float("inf"), -0.1, 1.0, True, None])
def test_a_search_constructor_refuses_a_fraction_that_is_not_one(value):
    """Called from Python (no gin type check in between): one ConfigError naming the argument."""
    from tf_lottery.search.imp import IMPSearch

    with pytest.raises(TfLotteryError, match="IMPSearch.prune_fraction"):
        IMPSearch(prune_fraction=value if value is not None else [0.2], num_rounds=2)
