"""tf_lottery: find, train, measure and ship lottery tickets in TensorFlow / Keras 3."""
__version__ = "0.1.0"

from tf_lottery.data import Dataset, DatasetInfo, load_dataset  # noqa: E402
from tf_lottery.errors import ConfigError, DataError, TfLotteryError, TrainingError  # noqa: E402

__all__ = ["__version__", "Dataset", "DatasetInfo", "load_dataset", "ConfigError", "DataError",
           "TfLotteryError", "TrainingError"]
