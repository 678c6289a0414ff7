"""The gin files in gin_configs/ (the published recipes) parse with tf_lottery.config.parse_config,
set the values their comments promise, and run one tiny round.

Add one entry per gin file to CASES: (file, bindings that shrink the run, {binding: value the
file itself sets}), and the file's search to SEARCHES. TFDS datasets (mnist, cifar10) are
replaced by tfds.testing.mock_data; fashion_mnist is read from the local files. The CIFAR ResNets
train too slowly on a CPU for this suite, so their cases swap in LeNet-300-100
(build_model.name) and a slow case keeps ResNet-20.
"""
import glob
import os

import gin
import pytest
import tensorflow_datasets as tfds

from tests.conftest import needs_fashion_mnist
from tf_lottery.config import parse_config
from tf_lottery.experiment import Experiment

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "gin_configs")
TINY = ["load_dataset.train_examples = 64", "load_dataset.test_examples = 32",
        "load_dataset.batch_size = 32", "TrainingRecipe.epochs = 1",
        "TrainingRecipe.jit_compile = False", "Experiment.verbose = 0",
        "Experiment.tensorboard = False"]
LENET = ["build_model.name = 'lenet_300_100'"]
ONE_ROUND = ["IMPSearch.num_rounds = 1"]
THREE_EPOCHS = ["TrainingRecipe.epochs = 3"]  # rewinding to '2ep' needs a longer round 0
GMP_TINY = ["GradualMagnitudeSearch.begin_step = 0", "GradualMagnitudeSearch.end_step = 2",
            "GradualMagnitudeSearch.frequency = 1"]  # the tiny round's 2 steps prune
EP_TINY = ["EdgePopupSearch.cycles = 2", "build_model.plan = [4, 'pool']",
           "build_model.dense_units = [8]"]

CASES = [
    pytest.param("imp_lenet_mnist.gin", ONE_ROUND, {
        "build_model.name": "lenet_300_100", "load_dataset.batch_size": 60,
        "TrainingRecipe.optimizer": "adam", "TrainingRecipe.learning_rate": 1.2e-3,
        "IMPSearch.layer_prune_fractions": "frankle_carbin", "IMPSearch.rewind_to": "init"},
        id="imp_lenet_mnist"),
    pytest.param("imp_resnet20_cifar10.gin", ONE_ROUND + THREE_EPOCHS + LENET, {
        "build_model.name": "resnet20", "TrainingRecipe.learning_rate": 0.1,
        "TrainingRecipe.momentum": 0.9, "TrainingRecipe.epochs": 85,
        "TrainingRecipe.lr_drop_epochs": (56, 71), "IMPSearch.scope": "global",
        "IMPSearch.prune_fraction": 0.2, "IMPSearch.rewind_to": "2ep",
        "IMPSearch.exclude": ["*_shortcut", "output"]},  # CS paper, Sec. 4.2
        id="imp_resnet20_cifar10"),
    pytest.param("imp_resnet20_cifar10.gin", ONE_ROUND + THREE_EPOCHS + ["build_model.width = 4"],
                 {"build_model.name": "resnet20"}, marks=pytest.mark.slow,
                 id="imp_resnet20_cifar10-resnet20"),
    pytest.param("imp_large_batch.gin", ONE_ROUND + LENET, {
        "load_dataset.batch_size": 2048, "TrainingRecipe.warmup_epochs": 10,
        "IMPSearch.rewind_to": "init", "IMPSearch.evaluate_controls": True},
        id="imp_large_batch"),
    pytest.param("omp.gin", THREE_EPOCHS + LENET, {
        "IMPSearch.one_shot": True, "IMPSearch.target_sparsity": 0.8}, id="omp"),
    pytest.param("imp_repulsion.gin", ["IMPSearch.num_rounds = 2"] + LENET, {
        "IMPSearch.repulsion_strength": 2.0, "load_dataset.batch_size": 2048,
        "TrainingRecipe.warmup_epochs": 0}, id="imp_repulsion"),
    pytest.param("imp_attraction.gin", ONE_ROUND + LENET, {
        "IMPSearch.repulsion_strength": -1.0, "load_dataset.batch_size": 128},
        id="imp_attraction"),
    pytest.param("snip.gin", LENET, {"PruneAtInitSearch.criterion": "snip",
                                     "PruneAtInitSearch.prune_fraction": 0.9,
                                     "TrainingRecipe.lr_drop_epochs": (90, 135)}, id="snip"),
    pytest.param("grasp.gin", LENET, {"PruneAtInitSearch.criterion": "grasp"}, id="grasp"),
    pytest.param("synflow.gin", LENET + ["synflow_masks.iterations = 2"],
                 {"PruneAtInitSearch.criterion": "synflow", "synflow_masks.iterations": 100},
                 id="synflow"),
    pytest.param("random_mask.gin", LENET, {"PruneAtInitSearch.criterion": "random"},
                 id="random_mask"),
    # the tiny run of each variant's file but hard_iep.gin (hard_lr) is slow-marked
    # (test_edge_popup trains ep, hard_sri and soft_ft in the fast suite, every variant with
    # -m slow; test_gin_file_sets_what_it_promises checks every file's values in the fast suite)
    *[pytest.param(name, EP_TINY, {"EdgePopupSearch.variant": variant},
                   marks=[needs_fashion_mnist] + ([] if name == "hard_iep.gin"
                                                  else [pytest.mark.slow]),
                   id=name[:-4])
      for name, variant in [("ep.gin", "ep"), ("hard_iep.gin", "hard_lr"),
                            ("hard_iep_ft.gin", "hard_ft"), ("hard_iep_srw.gin", "hard_srw"),
                            ("hard_iep_sri.gin", "hard_sri"), ("hard_iep_lr.gin", "hard_lr"),
                            ("soft_iep_ft.gin", "soft_ft"),
                            ("soft_iep_zero_init.gin", "soft_lr_zero_init"),
                            ("soft_iep_srw_zero_init.gin", "soft_srw_zero_init")]],
    pytest.param("soft_iep.gin", EP_TINY, {
        "EdgePopupSearch.variant": "soft_lr", "EdgePopupSearch.cycles": 3,
        "EdgePopupSearch.target_remaining": 0.3, "load_dataset.name": "fashion_mnist",
        "EdgePopupSearch.weight_init": "signed_kaiming_constant",
        "EdgePopupSearch.affine_batchnorm": False}, marks=needs_fashion_mnist, id="soft_iep"),
    pytest.param("soft_iep_resnet18_cifar10.gin", ["EdgePopupSearch.cycles = 2"], {
        "build_model.name": "resnet18", "build_model.stem": "cifar",
        "TrainingRecipe.learning_rate": 0.1, "TrainingRecipe.weight_decay": 1e-4,
        "TrainingRecipe.epochs": 100, "EdgePopupSearch.shrinkage": 0.2,
        "load_dataset.batch_size": 128}, marks=pytest.mark.slow,
        id="soft_iep_resnet18_cifar10"),
    pytest.param("soft_iep_wrn50_imagenet.gin", ["load_dataset.image_size = 32",
                                                 "build_model.name = 'resnet50'",
                                                 "EdgePopupSearch.cycles = 1"], {
        "build_model.name": "wide_resnet50_2", "TrainingRecipe.learning_rate": 0.3,
        "TrainingRecipe.momentum": 0.875, "TrainingRecipe.weight_decay": 3e-5,
        "TrainingRecipe.warmup_epochs": 5, "load_dataset.batch_size": 512,
        "EdgePopupSearch.target_remaining": 0.3}, marks=pytest.mark.slow,
        id="soft_iep_wrn50_imagenet"),
    pytest.param("imp_fashion_mnist.gin", ["IMPSearch.num_rounds = 2"], {
        "load_dataset.name": "fashion_mnist", "IMPSearch.num_rounds": 5,
        "IMPSearch.evaluate_controls": True, "IMPSearch.linear_connectivity": ["rounds"]},
        marks=needs_fashion_mnist, id="imp_fashion_mnist"),
    pytest.param("gmp_fashion_mnist.gin", GMP_TINY, {
        "GradualMagnitudeSearch.final_sparsity": 0.9, "GradualMagnitudeSearch.end_step": 1000,
        "GradualMagnitudeSearch.distribution": "erk"}, marks=needs_fashion_mnist,
        id="gmp_fashion_mnist"),
    pytest.param("network_slimming_fashion_mnist.gin", [], {
        "IMPSearch.structure": "channels", "IMPSearch.channel_criterion": "bn_gamma",
        "IMPSearch.slimming_strength": 1e-4, "IMPSearch.scope": "global",
        "IMPSearch.rewind_to": "lr", "build_model.batch_norm": True},
        marks=needs_fashion_mnist, id="network_slimming_fashion_mnist"),
    pytest.param("gmp_resnet20_cifar10.gin", GMP_TINY + LENET, {
        "build_model.name": "resnet20", "GradualMagnitudeSearch.begin_step": 6800,
        "GradualMagnitudeSearch.end_step": 25500, "GradualMagnitudeSearch.frequency": 340,
        "GradualMagnitudeSearch.distribution": "uniform", "TrainingRecipe.epochs": 85,
        "GradualMagnitudeSearch.exclude": ["*_shortcut", "output"]}, id="gmp_resnet20_cifar10"),
    pytest.param("gmp_resnet50_imagenet.gin", GMP_TINY + ["load_dataset.image_size = 32"], {
        "build_model.name": "resnet50", "load_dataset.batch_size": 1024,
        "TrainingRecipe.learning_rate": 0.4, "TrainingRecipe.weight_decay": 1e-4,
        "GradualMagnitudeSearch.begin_step": 40000, "GradualMagnitudeSearch.end_step": 100000,
        "GradualMagnitudeSearch.final_sparsity": 0.8, "GradualMagnitudeSearch.exclude": ["conv1"]},
        marks=pytest.mark.slow, id="gmp_resnet50_imagenet"),
]


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()  # bindings are global: leave none behind for other tests


# The searches whose every gin file must have a case above (add yours with your cases).
SEARCHES = {"IMPSearch", "PruneAtInitSearch", "EdgePopupSearch", "GradualMagnitudeSearch"}


def test_every_gin_file_of_these_searches_has_a_case():
    covered = {case.values[0] for case in CASES}
    missing = []
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.gin"))):
        parse_config([path])
        search = gin.query_parameter("Experiment.search").configurable.name
        if search in SEARCHES and os.path.basename(path) not in covered:
            missing.append(os.path.basename(path))
    assert missing == []


@pytest.mark.parametrize("gin_file, promised", [
    pytest.param(case.values[0], case.values[2], id=case.id) for case in CASES])
def test_gin_file_sets_what_it_promises(gin_file, promised):
    parse_config([os.path.join(CONFIG_DIR, gin_file)])
    for binding, value in promised.items():
        assert gin.query_parameter(binding) == value, binding


@pytest.mark.parametrize("gin_file, bindings, promised", CASES)
def test_gin_config_runs_one_tiny_round(tmp_path, gin_file, bindings, promised):
    path = os.path.join(CONFIG_DIR, gin_file)
    parse_config([path])
    for binding, value in promised.items():
        assert gin.query_parameter(binding) == value, binding
    parse_config([path], TINY + bindings)
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.AUTO):
        experiment = Experiment(workdir=str(tmp_path))
        results = experiment.run()
    assert len(results) == experiment.search.num_rounds
    for metrics in results:
        assert 0 <= metrics["test_accuracy"] <= 1
        assert 0 < metrics["remaining_fraction"] <= 1
    if len(results) > 1:
        assert results[-1]["remaining_fraction"] < results[0]["remaining_fraction"]
