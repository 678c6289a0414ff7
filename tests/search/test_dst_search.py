"""DynamicSparseSearch: its gin recipes, the workdir records and metrics of a tiny RigL round,
and bad settings (resumption: tests/sparsity/test_dst.py)."""
import json
import os

import gin
import pytest

from tests.conftest import needs_fashion_mnist
from tests.search.helpers import constant_recipe, mlp_experiment
from tests.search.mlp import mlp
from tf_lottery.config import parse_config
from tf_lottery.errors import ConfigError
from tf_lottery.experiment import Experiment
from tf_lottery.search import DynamicSparseSearch, rounds
from tf_lottery.search.dynamic_sparse import end_of_updates

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "gin_configs")
TINY = ["load_dataset.train_examples = 64", "load_dataset.test_examples = 32",
        "load_dataset.batch_size = 32", "TrainingRecipe.epochs = 1",
        "TrainingRecipe.jit_compile = False", "Experiment.verbose = 0",
        "Experiment.tensorboard = False", "build_model.plan = [4, 'pool']",
        "build_model.dense_units = [8]", "DynamicSparseSearch.update_interval = 1"]


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


@pytest.mark.parametrize("name, promised", [
    ("rigl_fashion_mnist.gin", {"updater": "rigl", "sparsity": 0.9, "distribution": "erk",
                                "update_interval": 100, "drop_fraction": 0.3,
                                "drop_fraction_decay": "cosine", "end_updates": 0.75}),
    ("set_fashion_mnist.gin", {"updater": "set", "update_interval": 100, "end_updates": 0.75}),
    ("static_sparse_fashion_mnist.gin", {"updater": "static", "sparsity": 0.9}),
    ("rigl_wrn22_2_cifar10.gin", {"updater": "rigl", "distribution": "erk",
                                  "update_interval": 100, "drop_fraction": 0.3,
                                  "end_updates": 0.75, "exclude": ["conv1"]}),
    ("rigl_resnet50_imagenet.gin", {"updater": "rigl", "end_updates": "25000it",
                                    "exclude": ["conv1"]})])
def test_gin_recipes_set_what_their_comments_promise(name, promised):
    parse_config([os.path.join(CONFIG_DIR, name)])
    for argument, value in promised.items():
        assert gin.query_parameter(f"DynamicSparseSearch.{argument}") == value, argument


@needs_fashion_mnist
def test_rigl_gin_file_runs_a_tiny_round_and_records_the_counters(tmp_path):
    parse_config([os.path.join(CONFIG_DIR, "rigl_fashion_mnist.gin")], TINY)
    experiment = Experiment(workdir=str(tmp_path))
    metrics = experiment.run()[0]
    search = experiment.search
    counts = search.updater.target_counts()
    assert metrics["algorithm"] == "rigl"
    # 2 steps, ΔT = 1, T_end = round(0.75·2) = 2: both steps update
    assert metrics["end_step"] == 2 and metrics["mask_updates"] == 2
    assert metrics["remaining_weights"] == sum(counts.values())
    assert metrics["density"] == pytest.approx(0.1, abs=0.01)
    assert metrics["ever_active_fraction"] > metrics["density"]
    assert metrics["moved_total"] > 0
    with open(tmp_path / "round_00" / "metrics.json") as f:
        assert json.load(f)["ever_active_fraction"] == metrics["ever_active_fraction"]
    epoch = metrics["history"][-1]
    assert epoch["dst/updates"] == 2 and epoch["dst/moved_total"] == metrics["moved_total"]
    assert set(counts) <= {key.split("/")[-1] for key in epoch if key.startswith("dst/density")}
    ticket = rounds.load_round_masks(str(tmp_path), 0)
    assert {name: int(mask.sum()) for name, mask in ticket.items()} == counts


def test_bad_settings_are_one_config_error_naming_the_argument(tmp_path):
    for kwargs, name in [(dict(update_interval=0), "update_interval"),
                         (dict(drop_fraction=2.0), "drop_fraction"),
                         (dict(sparsity=-0.5), "sparsity"),
                         (dict(distribution="gaussian"), "distribution"),
                         (dict(updater="snfs"), "updater"),
                         (dict(end_updates="3 epochs"), "end_updates"),
                         (dict(end_updates=1.5), "end_updates"),
                         (dict(end_updates=500), "end_updates")]:
        with pytest.raises(ConfigError, match=name):
            DynamicSparseSearch(**kwargs)
    assert end_of_updates(0.75, 100, 10) == 75 and end_of_updates("2ep", 100, 10) == 20
    with pytest.raises(ConfigError, match="end_updates '9it' is step 9, outside the 8 steps"):
        search = DynamicSparseSearch(end_updates="9it", recipe=constant_recipe(epochs=1))
        search.build(mlp_experiment(tmp_path, search, model_fn=mlp))  # 8 steps per epoch
