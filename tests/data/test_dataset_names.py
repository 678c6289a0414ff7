"""What load_dataset says about a name it cannot load, and the TFDS path's own dependencies."""
import pytest

from tf_lottery.data import load_dataset
from tf_lottery.errors import ConfigError, DataError


def test_short_names_suggest_the_tfds_spelling():
    with pytest.raises(ConfigError, match="Did you mean 'fashion_mnist'"):
        load_dataset("fmnist", download=False)
    with pytest.raises(ConfigError, match="Did you mean 'svhn_cropped'"):
        load_dataset("svhn", download=False)


def test_an_unprepared_tfds_dataset_is_a_data_error_not_a_missing_module(tmp_path):
    # TFDS's cifar10 builder imports importlib_resources (a declared dependency of tf_lottery)
    with pytest.raises(DataError, match="tfds build cifar10"):
        load_dataset("cifar10", download=False, data_dir=str(tmp_path))
