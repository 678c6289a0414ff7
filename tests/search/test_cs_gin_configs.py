"""Every continuous-sparsification / ISS recipe in gin_configs/ parses and runs one tiny round
(sizes overridden by bindings; CIFAR-10 from tfds.testing.mock_data)."""
import os

import gin
import pytest

from tests.conftest import needs_fashion_mnist
from tf_lottery.config import parse_config
from tf_lottery.experiment import Experiment
from tf_lottery.search import rounds
from tf_lottery.search.continuous_sparsification import (ContinuousSparsificationSearch,
                                                          IterativeStochasticSparsificationSearch)

GIN_DIR = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "gin_configs")
CS = "ContinuousSparsificationSearch"
ISS = "IterativeStochasticSparsificationSearch"

# file: (search, the settings the file must hold, extra bindings to keep the run tiny)
CASES = {
    "cs.gin": (CS, {"num_rounds": 3, "rewind_to": "init"}, []),
    "cs_conv6_cifar10.gin": (CS, {"num_rounds": 4, "l1_penalty": 1e-10, "final_beta": 100.0,
                                  "rewind_to": "init"}, []),
    "cs_resnet18_cifar10.gin": (CS, {"num_rounds": 5, "rewind_to": None,
                                     "evaluation_rewind_to": "2ep",
                                     "exclude": ("*_shortcut", "output")},
                                ["TrainingRecipe.epochs = 2"]),
    "cs_supermask.gin": (CS, {"num_rounds": 1, "supermask": True, "evaluate_tickets": False},
                         []),
    "iss.gin": (ISS, {"num_rounds": 30, "initial_score": 1.0, "l1_penalty": 1e-8,
                      "rewind_to": "init"}, []),
}
SEARCH_CLASSES = {CS: ContinuousSparsificationSearch, ISS: IterativeStochasticSparsificationSearch}


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()  # bindings such as load_dataset.name must not leak into other tests


def _tiny_bindings(search):
    return [f"{search}.num_rounds = 1", "TrainingRecipe.epochs = 1",
            "TrainingRecipe.jit_compile = False", "load_dataset.batch_size = 32",
            "load_dataset.train_examples = 64", "load_dataset.test_examples = 32",
            "Experiment.verbose = 0", "Experiment.tensorboard = False"]


def _run(name, tmp_path):
    search_name, expected, extra = CASES[name]
    path = os.path.join(GIN_DIR, name)
    parse_config([path])
    search = gin.query_parameter("Experiment.search").scoped_configurable_fn()
    assert isinstance(search, SEARCH_CLASSES[search_name])
    for attribute, value in expected.items():
        assert getattr(search, attribute) == value, attribute
    parse_config([path], _tiny_bindings(search_name) + extra)
    results = Experiment(workdir=str(tmp_path)).run()
    assert len(results) == 1 and rounds.completed_rounds(str(tmp_path)) == [0]
    metrics = results[0]
    assert 0 <= metrics["ticket_test_accuracy"] <= 1
    assert ("retrained_test_accuracy" in metrics) == search.evaluate_tickets
    return metrics


def test_every_cs_gin_file_is_covered():
    files = {f for f in os.listdir(GIN_DIR)
             if f.startswith(("cs", "iss")) and f.endswith(".gin")}
    assert files == set(CASES)


@needs_fashion_mnist
def test_cs_gin_runs_on_offline_fashion_mnist(tmp_path):
    metrics = _run("cs.gin", tmp_path)
    assert metrics["algorithm"] == "continuous_sparsification"


@pytest.mark.parametrize("name", [
    "cs_supermask.gin",  # ~5-10 s
    pytest.param("iss.gin", marks=pytest.mark.slow),  # ISS rounds: test_continuous_sparsification
    pytest.param("cs_conv6_cifar10.gin", marks=pytest.mark.slow),  # ticket retraining too
    pytest.param("cs_resnet18_cifar10.gin", marks=pytest.mark.slow)])
def test_cifar10_gin_runs_on_mock_data(name, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.AUTO):
        _run(name, tmp_path)
