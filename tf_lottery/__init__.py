"""tf_lottery: find, train, measure and ship lottery tickets in TensorFlow / Keras 3.

The main entry points:

* layers: MaskedDense, MaskedConv2D, MaskedDepthwiseConv2D and the mask rules FixedMask,
  TopKScores, SigmoidScores, BernoulliScores (tf_lottery.layers);
* models: build_model (the zoo) and sparsify (your own Keras model) (tf_lottery.models);
* data: load_dataset (tf_lottery.data);
* training: SparseModel, TrainingRecipe (tf_lottery.training);
* searches: EdgePopupSearch, ContinuousSparsificationSearch, ... (tf_lottery.search), run by an
  Experiment (tf_lottery.experiment) or bin/train;
* measurements: tf_lottery.analysis; export: tf_lottery.export.
"""
__version__ = "0.1.0"

from tf_lottery.data import Dataset, DatasetInfo, load_dataset  # noqa: E402
from tf_lottery.errors import ConfigError, DataError, TfLotteryError, TrainingError  # noqa: E402
from tf_lottery.layers import (BernoulliScores, FixedMask, MaskedConv2D, MaskedDense,  # noqa: E402
                               MaskedDepthwiseConv2D, SigmoidScores, TopKScores)
from tf_lottery.masks import get_masks, set_masks  # noqa: E402
from tf_lottery.models import build_model, sparsify  # noqa: E402
from tf_lottery.training import SparseModel, TrainingRecipe  # noqa: E402

__all__ = ["__version__", "Dataset", "DatasetInfo", "load_dataset", "ConfigError", "DataError",
           "TfLotteryError", "TrainingError", "BernoulliScores", "FixedMask", "MaskedConv2D",
           "MaskedDense", "MaskedDepthwiseConv2D", "SigmoidScores", "TopKScores", "get_masks",
           "set_masks", "build_model", "sparsify", "SparseModel", "TrainingRecipe"]
