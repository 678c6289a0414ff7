"""gin_configs/gmp_fashion_mnist.gin through the Experiment machinery (bin/train's path)."""
import os

import gin
import pytest

from tests.conftest import needs_fashion_mnist
from tf_lottery.config import parse_config
from tf_lottery.errors import ConfigError
from tf_lottery.experiment import Experiment
from tf_lottery.search import GradualMagnitudeSearch

GIN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "gin_configs", "gmp_fashion_mnist.gin")
TINY = ["load_dataset.train_examples = 64", "load_dataset.test_examples = 32",
        "load_dataset.batch_size = 32", "TrainingRecipe.epochs = 1",
        "TrainingRecipe.jit_compile = False", "Experiment.verbose = 0",
        "Experiment.tensorboard = False", "build_model.plan = [4, 'pool']",
        "build_model.dense_units = [8]", "GradualMagnitudeSearch.begin_step = 1",
        "GradualMagnitudeSearch.end_step = 2", "GradualMagnitudeSearch.frequency = 1"]


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


@needs_fashion_mnist
def test_gmp_gin_file_runs_one_tiny_round_to_its_final_sparsity(tmp_path):
    parse_config([GIN])
    assert gin.query_parameter("GradualMagnitudeSearch.final_sparsity") == 0.9
    assert gin.query_parameter("GradualMagnitudeSearch.distribution") == "erk"
    parse_config([GIN], TINY)
    experiment = Experiment(workdir=str(tmp_path))
    results = experiment.run()
    assert len(results) == 1
    metrics = results[0]
    assert metrics["algorithm"] == "gmp"
    assert metrics["target_sparsity"] == pytest.approx(0.9)
    # 2 steps of 32 examples: the schedule's end, ERK over the layers
    assert metrics["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert 0 <= metrics["test_accuracy"] <= 1
    assert os.path.exists(os.path.join(str(tmp_path), "round_00", "metrics.json"))


def test_bad_schedule_in_the_search_is_one_config_error():
    with pytest.raises(ConfigError, match="end_step"):
        GradualMagnitudeSearch(begin_step=10, end_step=10)
    with pytest.raises(ConfigError, match="distribution"):
        GradualMagnitudeSearch(distribution="ekr")
