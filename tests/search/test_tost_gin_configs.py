"""Every ToST gin recipe parses, says what it claims (the paper's settings, which tweaks are on),
and runs one tiny round (CIFAR-10 through tfds.testing.mock_data)."""
import contextlib
import os

import gin
import pytest
import tensorflow_datasets as tfds

from tests.conftest import needs_fashion_mnist
from tf_lottery.config import parse_config
from tf_lottery.experiment import Experiment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWEAKS_OFF = {"ghost_skips": False, "ghost_activation": None, "lrsi": False,
              "label_smoothing": 0.0, "distillation": None}
ALL_TWEAKS = {**TWEAKS_OFF, "ghost_skips": True, "ghost_activation": "swish", "lrsi": True,
              "label_smoothing": 0.1}
# config: the tweaks it turns on
CIFAR_CONFIGS = {
    "tost.gin": ALL_TWEAKS,
    "tost_gsk.gin": {**TWEAKS_OFF, "ghost_skips": True},
    "tost_gsw.gin": {**TWEAKS_OFF, "ghost_activation": "swish"},
    "tost_lrsi.gin": {**TWEAKS_OFF, "lrsi": True},
    "tost_ls.gin": {**TWEAKS_OFF, "label_smoothing": 0.1},
    "tost_kd.gin": {**TWEAKS_OFF, "distillation": "dense"},
}
PAPER = {"TrainingRecipe.optimizer": "sgd", "TrainingRecipe.learning_rate": 0.1,
         "TrainingRecipe.momentum": 0.9, "TrainingRecipe.weight_decay": 2e-4,
         "TrainingRecipe.lr_schedule": "step", "TrainingRecipe.lr_drop_factor": 0.1,
         "load_dataset.batch_size": 128}
TINY = ["load_dataset.train_examples = 64", "load_dataset.test_examples = 32",
        "load_dataset.batch_size = 32", "TrainingRecipe.epochs = 2",
        "TrainingRecipe.lr_drop_epochs = [1]", "ToSTTraining.prune_fraction = 0.9",
        "ToSTTraining.teacher_epochs = 1", "layerwise_rescaled_init.iterations = 2",
        "Experiment.verbose = 0", "Experiment.tensorboard = False"]


def _path(name):
    return os.path.join(ROOT, "gin_configs", name)


def _tweaks():
    names = {"ghost_skips": "ToSTTraining.ghost_skips",
             "ghost_activation": "ToSTTraining.ghost_activation", "lrsi": "ToSTTraining.lrsi",
             "label_smoothing": "TrainingRecipe.label_smoothing",
             "distillation": "ToSTTraining.teacher"}
    return {key: gin.query_parameter(binding) for key, binding in names.items()}


def _run_tiny(name, tmp_path, bindings, data=contextlib.nullcontext()):
    parse_config([_path(name)], TINY + bindings)
    try:
        with data:
            results = Experiment(workdir=str(tmp_path)).run()
    finally:
        gin.clear_config()
    assert len(results) == 1 and results[0]["sparsity"] == pytest.approx(0.9, abs=0.01)
    return results[0]


@pytest.mark.parametrize("name", sorted(CIFAR_CONFIGS))
def test_cifar10_recipes_state_the_paper_settings_and_their_tweaks(name):
    parse_config([_path(name)])
    try:
        for binding, value in PAPER.items():
            assert gin.query_parameter(binding) == value, binding
        assert gin.query_parameter("TrainingRecipe.epochs") == 180
        assert list(gin.query_parameter("TrainingRecipe.lr_drop_epochs")) == [90, 135]
        assert gin.query_parameter("ToSTTraining.criterion") == "snip"
        assert list(gin.query_parameter("ToSTTraining.prune_fraction")) == [0.9, 0.95, 0.98]
        assert gin.query_parameter("load_dataset.name") == "cifar10"
        assert gin.query_parameter("build_model.name") == "resnet32"
        assert _tweaks() == CIFAR_CONFIGS[name]
    finally:
        gin.clear_config()


@pytest.mark.slow  # ResNet-32 (31 convolutions with ghosts, LRsI's second-order gradient): minutes
@pytest.mark.parametrize("name", sorted(CIFAR_CONFIGS))
def test_cifar10_recipes_run_a_tiny_round(name, tmp_path):
    mock = tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.AUTO)
    metrics = _run_tiny(name, tmp_path, ["build_model.width = 2"], data=mock)
    assert metrics["tweaks"] == CIFAR_CONFIGS[name]
    ghosts = CIFAR_CONFIGS[name]["ghost_skips"] or CIFAR_CONFIGS[name]["ghost_activation"]
    assert metrics["ghosts_removed"] == bool(ghosts)
    assert metrics["ghost_end_epoch"] == (1.0 if ghosts else None)


def test_fashion_mnist_recipe_states_its_settings():
    parse_config([_path("tost_fashion_mnist.gin")])
    try:
        assert gin.query_parameter("load_dataset.name") == "fashion_mnist"
        assert gin.query_parameter("build_model.batch_norm") is True
        assert gin.query_parameter("TrainingRecipe.epochs") == 4
        assert list(gin.query_parameter("TrainingRecipe.lr_drop_epochs")) == [2, 3]
        assert gin.query_parameter("TrainingRecipe.weight_decay") == 2e-4
        assert gin.query_parameter("TrainingRecipe.learning_rate") == 0.01
        assert gin.query_parameter("ToSTTraining.prune_fraction") == 0.9
        assert gin.query_parameter("ToSTTraining.ghost_schedule_per_batch") is True
        assert _tweaks() == ALL_TWEAKS
    finally:
        gin.clear_config()


@needs_fashion_mnist
def test_fashion_mnist_recipe_runs_a_tiny_round(tmp_path):
    metrics = _run_tiny("tost_fashion_mnist.gin", tmp_path, ["build_model.plan = [4, 'pool', 8]"])
    assert metrics["tweaks"] == ALL_TWEAKS and metrics["ghosts_removed"]
    assert [h["ghost_alpha"] for h in metrics["history"]] == [1.0, 0.0]
