import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.conftest import needs_fashion_mnist
from tf_lottery.data import augment, load_dataset
from tf_lottery.data.idx import read_idx
from tf_lottery.errors import ConfigError, DataError


def _batches(dataset, n):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(n)]


@needs_fashion_mnist
def test_fashion_mnist_counts_labels_and_pixel_statistics():
    ds = load_dataset("fashion_mnist", batch_size=1000)
    info = ds.info
    assert info.source == "debian-idx"
    assert (info.num_train_examples, info.num_test_examples) == (60000, 10000)
    assert info.input_shape == (28, 28, 1) and info.num_classes == 10
    images, labels = [], []
    for x, y in ds.train_epoch(0):
        images.append(x.numpy())
        labels.append(y.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert len(labels) == 60000
    # Every class 6000 times: the real Fashion-MNIST training set is balanced.
    assert np.array_equal(np.bincount(labels, minlength=10), np.full(10, 6000))
    # Normalisation constants match the real pixels: standardised data has mean 0, std 1.
    assert abs(images.mean()) < 1e-3 and abs(images.std() - 1) < 2e-3
    test_labels = np.concatenate([y.numpy() for _, y in ds.test])
    assert len(test_labels) == 10000 and set(np.unique(test_labels)) == set(range(10))


@needs_fashion_mnist
def test_same_seed_same_batches_other_seed_other_batches():
    a = _batches(load_dataset(batch_size=64, seed=3).train_batches(), 2)
    b = _batches(load_dataset(batch_size=64, seed=3).train_batches(), 2)
    c = _batches(load_dataset(batch_size=64, seed=4).train_batches(), 2)
    assert all(np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not np.array_equal(a[0][1], c[0][1])


@needs_fashion_mnist
def test_epochs_differ_and_resuming_at_an_epoch_gives_that_epoch():
    ds = load_dataset(batch_size=100, seed=0, train_examples=300)
    stream = _batches(ds.train_batches(0), 6)  # epochs 0 and 1, three batches each
    resumed = _batches(ds.train_batches(1), 3)  # started directly at epoch 1
    assert not np.array_equal(stream[0][1], stream[3][1])
    for (x1, y1), (x2, y2) in zip(stream[3:], resumed):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    # each epoch is a permutation of the same 300 examples
    assert sorted(np.concatenate([y for _, y in stream[:3]])) == sorted(
        np.concatenate([y for _, y in stream[3:]]))


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_round_trip_and_truncation(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)
    raw = gzip.open(tmp_path / "a.gz").read()
    with gzip.open(tmp_path / "b.gz", "wb") as f:
        f.write(raw[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "b.gz")


def test_local_idx_files_from_any_folder(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    ds = load_dataset("mnist", source="local", data_dir=str(tmp_path), batch_size=10)
    assert (ds.info.num_train_examples, ds.info.num_test_examples) == (50, 20)
    assert ds.steps_per_epoch == 5
    x, y = next(iter(ds.train_batches()))
    assert x.shape == (10, 28, 28, 1) and x.dtype == tf.float32


def test_missing_local_files_is_one_readable_error(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("fashion_mnist", source="local", data_dir=str(tmp_path / "nowhere"))
    message = str(e.value).splitlines()[0]  # gin appends a second line naming the configurable
    assert "dataset-fashion-mnist" in message and "nowhere" in message


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="source"):
        load_dataset(source="internet")
    with pytest.raises(ConfigError, match="batch_size"):
        load_dataset(batch_size=0)
    with pytest.raises(ConfigError, match="augmentation"):
        load_dataset(augmentation="mixup")
    with pytest.raises(ConfigError, match="cifar10"):
        load_dataset("cifar1O", source="tfds")  # typo: suggests the real name


def test_tfds_cifar10_pipeline_with_mock_data():
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.AUTO):
        ds = load_dataset("cifar10", source="tfds", batch_size=16, seed=1)
        assert ds.info.source == "tfds" and ds.info.input_shape == (32, 32, 3)
        assert ds.info.num_classes == 10 and ds.info.augmentation == "cifar"
        x, y = next(iter(ds.train_batches()))
        assert x.shape == (16, 32, 32, 3) and y.shape == (16,)
        assert np.all((y.numpy() >= 0) & (y.numpy() < 10))
        tx, _ = next(iter(ds.test))
        assert tx.shape[1:] == (32, 32, 3)


def test_cifar_augmentation_keeps_shape_and_changes_pixels():
    image = tf.random.stateless_uniform((32, 32, 3), seed=[0, 1])
    out = [augment.cifar_train(image, tf.constant([s, 7], tf.int64)) for s in range(8)]
    assert all(o.shape == (32, 32, 3) for o in out)
    assert sum(not np.allclose(o.numpy(), image.numpy()) for o in out) >= 6
    # deterministic for a given seed
    again = augment.cifar_train(image, tf.constant([0, 7], tf.int64))
    assert np.array_equal(again.numpy(), out[0].numpy())


def test_imagenet_train_and_eval_produce_fixed_size_crops():
    image = tf.random.stateless_uniform((300, 400, 3), seed=[1, 2])
    train = augment.imagenet_train(image, tf.constant([3, 4], tf.int64), image_size=64)
    assert train.shape == (64, 64, 3)
    evaluated = augment.imagenet_eval(image, image_size=64, resize_to=73)
    assert evaluated.shape == (64, 64, 3)


def test_imagenet_pipeline_with_mock_data():
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.AUTO):
        ds = load_dataset("imagenet2012", source="tfds", batch_size=4, image_size=32,
                          download=False)
        assert ds.info.input_shape == (32, 32, 3) and ds.info.num_classes == 1000
        x, _ = next(iter(ds.train_batches()))
        assert x.shape == (4, 32, 32, 3)
        tx, _ = next(iter(ds.test))
        assert tx.shape[1:] == (32, 32, 3)
