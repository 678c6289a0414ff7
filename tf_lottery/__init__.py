"""tf_lottery: find, train, measure and ship lottery tickets in TensorFlow / Keras 3.

The main entry points:

* layers: MaskedDense, MaskedConv2D, MaskedDepthwiseConv2D and the mask rules FixedMask,
  TopKScores, SigmoidScores, BernoulliScores (tf_lottery.layers);
* models: build_model (the zoo) and sparsify (your own Keras model) (tf_lottery.models);
* data: load_dataset (tf_lottery.data);
* training: SparseModel, TrainingRecipe (tf_lottery.training);
* searches: IMPSearch, EdgePopupSearch, ContinuousSparsificationSearch, ... (tf_lottery.search),
  run on your own model by tf_lottery.search.run(search, model, data, workdir), or from gin
  files by bin/train (an Experiment, tf_lottery.experiment);
* by hand: get_masks / set_masks / reset_masks, dense_weights / assign_dense_weights (rewind
  without touching the masks), freeze_weights (train only the scores);
* gradual pruning during your own fit: tf_lottery.sparsity.prune_low_magnitude;
* measurements: tf_lottery.analysis; export: tf_lottery.export (export_saved_model,
  export_keras, export_tflite, save_ticket / load_ticket, export_sizes).

docs/python_guide.md walks through each from Python.
"""
__version__ = "0.1.0"

from tf_lottery.data import Dataset, DatasetInfo, load_dataset  # noqa: E402
from tf_lottery.errors import ConfigError, DataError, TfLotteryError, TrainingError  # noqa: E402
from tf_lottery.layers import (BernoulliScores, FixedMask, MaskedConv2D, MaskedDense,  # noqa: E402
                               MaskedDepthwiseConv2D, SigmoidScores, TopKScores)
from tf_lottery.masks import freeze_weights, get_masks, reset_masks, set_masks  # noqa: E402
from tf_lottery.models import build_model, sparsify  # noqa: E402
from tf_lottery.training import SparseModel, TrainingRecipe  # noqa: E402
from tf_lottery import export, pruning, search, sparsity  # noqa: E402 (tl.search.run, ...)
from tf_lottery.search.rewind import assign_dense_weights, dense_weights  # noqa: E402

__all__ = ["__version__", "Dataset", "DatasetInfo", "load_dataset", "ConfigError", "DataError",
           "TfLotteryError", "TrainingError", "BernoulliScores", "FixedMask", "MaskedConv2D",
           "MaskedDense", "MaskedDepthwiseConv2D", "SigmoidScores", "TopKScores", "get_masks",
           "set_masks", "reset_masks", "freeze_weights", "dense_weights",
           "assign_dense_weights", "build_model", "sparsify", "SparseModel", "TrainingRecipe",
           "export", "pruning", "search", "sparsity"]
