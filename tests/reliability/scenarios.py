"""The bad inputs of the reliability tally (docs/RESULTS.md), shared by tests/reliability/ and
bench/reliability.py: each is a gin start (files, bindings) that must end with one readable
TfLotteryError naming the parameter (or file) before anything is written.

Gin files are named relative to the repository root; `EMPTY`, `GARBLED`, ... are made by
`make_gin_files(folder)` and replaced by their paths."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOFT = "gin_configs/soft_iep.gin"
IMP = "gin_configs/imp_fashion_mnist.gin"
TOST = "gin_configs/tost_fashion_mnist.gin"
# a tiny soft iEP run (tests/cli/train_process.py's bindings)
TINY = ["load_dataset.train_examples=512", "load_dataset.test_examples=256",
        "load_dataset.batch_size=64", "TrainingRecipe.epochs=1", "EdgePopupSearch.cycles=2",
        "build_model.plan=[8, 'pool']", "build_model.dense_units=[16]"]
TINY_IMP = ["load_dataset.train_examples=512", "load_dataset.test_examples=256",
            "TrainingRecipe.epochs=1", "IMPSearch.num_rounds=2",
            "IMPSearch.linear_connectivity=[]", "IMPSearch.evaluate_controls=False"]

GIN_FILES = {
    "EMPTY": b"",
    "GARBLED": bytes(range(256)) * 4,
    "SYNTAX": b"TrainingRecipe.epochs = = 2\n",
    "LATIN1": "TrainingRecipe.optimizer = 'sgd'  # caf\xe9\n".encode("latin-1"),
    "ONLY_MODEL": b"Experiment.model_fn = @build_model\n",
}

# (id, gin files, bindings, texts the one line must hold)
BAD_STARTS = [
    # a value of the wrong type
    ("type_fraction_str", [IMP], ["IMPSearch.prune_fraction='abc'"],
     ["IMPSearch.prune_fraction", "number", "'abc'"]),
    ("type_epochs_str", [SOFT], ["TrainingRecipe.epochs='two'"],
     ["TrainingRecipe.epochs", "number"]),
    ("type_lr_str", [SOFT], ["TrainingRecipe.learning_rate='0.1'"],
     ["TrainingRecipe.learning_rate", "number"]),
    ("type_bool", [SOFT], ["Experiment.tensorboard='yes'"],
     ["Experiment.tensorboard", "True or False"]),
    ("type_batch_fractional", [SOFT], ["load_dataset.batch_size=64.5"],
     ["load_dataset.batch_size", "whole number"]),
    ("type_cycles_str", [SOFT], ["EdgePopupSearch.cycles='2'"],
     ["EdgePopupSearch.cycles", "number"]),
    ("type_seed_str", [SOFT], ["Experiment.seed='abc'"], ["Experiment.seed", "number"]),
    ("type_unquoted_word", [SOFT], ["TrainingRecipe.epochs=two"],
     ["cannot read the value 'two'", "TrainingRecipe.epochs=two"]),
    # NaN and ±inf
    ("nan_lr", [SOFT], ["TrainingRecipe.learning_rate=nan"],
     ["cannot read the value 'nan'", "TrainingRecipe.learning_rate"]),
    ("inf_lr", [SOFT], ["TrainingRecipe.learning_rate=1e999"],
     ["TrainingRecipe.learning_rate", "finite", "inf"]),
    ("minus_inf_lr", [SOFT], ["TrainingRecipe.learning_rate=-1e999"],
     ["TrainingRecipe.learning_rate", "finite"]),
    ("inf_momentum", [SOFT], ["TrainingRecipe.momentum=1e999"],
     ["TrainingRecipe.momentum", "finite"]),
    ("inf_fraction", [IMP], ["IMPSearch.prune_fraction=1e999"],
     ["prune_fraction", "[0, 1)"]),
    ("inf_smoothing", [SOFT], ["TrainingRecipe.label_smoothing=-1e999"],
     ["TrainingRecipe.label_smoothing", "finite"]),
    # out of range
    ("zero_lr", [SOFT], ["TrainingRecipe.learning_rate=0"],
     ["TrainingRecipe.learning_rate", "> 0"]),
    ("negative_lr", [SOFT], ["TrainingRecipe.learning_rate=-0.1"],
     ["TrainingRecipe.learning_rate", "> 0"]),
    ("zero_epochs", [SOFT], ["TrainingRecipe.epochs=0"], ["TrainingRecipe.epochs", ">= 1"]),
    ("fraction_above_one", [IMP], ["IMPSearch.prune_fraction=1.5"],
     ["prune_fraction", "[0, 1)", "1.5"]),
    ("remaining_above_one", [SOFT], ["EdgePopupSearch.target_remaining=1.5"],
     ["target_remaining", "[0, 1]"]),
    ("zero_batch", [SOFT], ["load_dataset.batch_size=0"], ["load_dataset.batch_size"]),
    ("smoothing_one", [SOFT], ["TrainingRecipe.label_smoothing=1.0"],
     ["TrainingRecipe.label_smoothing", "[0, 1)"]),
    # unknown names
    ("unknown_model", [SOFT], ["build_model.name='nope'"], ["unknown model 'nope'"]),
    ("unknown_dataset", [SOFT], ["load_dataset.name='fashion_mnst'"],
     ["unknown dataset 'fashion_mnst'", "fashion_mnist"]),
    ("tfds_unparsable_name", [SOFT], ["load_dataset.name='fashion-mnist'"],
     ["unknown dataset 'fashion-mnist'", "'fashion_mnist'"]),
    ("unknown_optimizer", [SOFT], ["TrainingRecipe.optimizer='sgdd'"],
     ["TrainingRecipe.optimizer", "'sgd'"]),
    ("unknown_schedule", [SOFT], ["TrainingRecipe.lr_schedule='cosin'"],
     ["TrainingRecipe.lr_schedule", "'cosine'"]),
    ("unknown_variant", [SOFT], ["EdgePopupSearch.variant='soft'"],
     ["EdgePopupSearch.variant", "got 'soft'", "soft_lr"]),
    ("unknown_source", [SOFT], ["load_dataset.source='web'"], ["load_dataset.source"]),
    ("unknown_augmentation", [SOFT], ["load_dataset.augmentation='crazy'"],
     ["load_dataset.augmentation"]),
    ("unknown_configurable", [SOFT], ["TrainingRecip.epochs=1"],
     ["unknown gin configurable 'TrainingRecip'", "TrainingRecipe"]),
    ("unknown_parameter", [SOFT], ["TrainingRecipe.learning_rat=0.1"],
     ["TrainingRecipe has no parameter 'learning_rat'", "learning_rate"]),
    ("unknown_model_option", [SOFT], ["build_model.widht=2"], ["widht"]),
    # gin files
    ("empty_gin_file", ["EMPTY"], [],
     ["missing required gin bindings", "Experiment.search", "Experiment.model_fn"]),
    ("no_gin_file", [], [], ["missing required gin bindings", "Experiment.search"]),
    ("only_model_bound", ["ONLY_MODEL"], [],
     ["missing required gin bindings: Experiment.search;"]),
    ("missing_gin_file", ["gin_configs/no_such.gin"], [],
     ["cannot read gin file", "gin_configs/no_such.gin", "No such file"]),
    ("gin_file_is_a_folder", ["gin_configs"], [],
     ["cannot read gin file", "gin_configs", "Is a directory"]),
    ("garbled_gin_file", ["GARBLED"], [], ["cannot read gin file", "garbled.gin", "UTF-8"]),
    ("gin_syntax_error", ["SYNTAX"], [], ["invalid gin config", "syntax.gin, line 1"]),
    ("gin_not_utf8", ["LATIN1"], [], ["cannot read gin file", "latin1.gin", "UTF-8"]),
    ("tost_ticket_not_a_ticket", [TOST], ["ToSTTraining.mask_source='ticket'",
                                          "ToSTTraining.ticket_path='gin_configs/ep.gin'"],
     ["gin_configs/ep.gin", "not a tf_lottery ticket file"]),
]


def make_gin_files(folder):
    """Write GIN_FILES into `folder`; returns {name: path}."""
    paths = {}
    for name, content in GIN_FILES.items():
        path = os.path.join(str(folder), f"{name.lower()}.gin")
        with open(path, "wb") as f:
            f.write(content)
        paths[name] = path
    return paths


def resolve(files, made):
    """Gin file names of a case as paths (made files by name, others under ROOT)."""
    return [made.get(name) or os.path.join(ROOT, name) for name in files]


def bindings_of(case):
    """The case's bindings after the tiny-run bindings of its recipe (the case's win)."""
    _, files, bindings, _ = case
    if IMP in files:
        return [*TINY_IMP, *bindings]
    if any(name in (SOFT, TOST) for name in files):
        return [*TINY, *bindings] if SOFT in files else list(bindings)
    return list(bindings)
