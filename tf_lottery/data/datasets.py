"""Datasets as tf.data pipelines: the offline Debian Fashion-MNIST files, or any TFDS dataset.

`load_dataset` is the one gin-configurable entry. It returns a `Dataset` holding

* `train_batches(start_epoch)`: an endless stream of augmented, normalised batches of
  `batch_size` (the *global* batch: a tf.distribute strategy splits it over replicas). Epoch e
  is shuffled with a seed derived from (seed, e) and every augmentation is stateless, so epoch e
  is the same whether the run started at epoch 0 or was resumed at epoch e;
* `test`: the test split, normalised, batched, not shuffled;
* `info`: input shape, number of classes, numbers of examples, normalisation constants.
"""
import dataclasses
import difflib
import os
from typing import Optional, Tuple

import gin
import numpy as np
import tensorflow as tf

from tf_lottery.data import augment
from tf_lottery.data.idx import find_idx_file, read_idx
from tf_lottery.errors import ConfigError, DataError

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # `dpkg -L dataset-fashion-mnist`
_LOCAL_DIR_ENV = {"fashion_mnist": "TF_LOTTERY_FASHION_MNIST_DIR", "mnist": "TF_LOTTERY_MNIST_DIR"}
_LOCAL_DEFAULT_DIR = {"fashion_mnist": DEBIAN_FASHION_MNIST_DIR, "mnist": None}
_IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

# Per-channel mean/std of the training images scaled to [0, 1].
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# The standard training augmentation of each family (see augment.py).
AUGMENTATION = {"cifar10": "cifar", "cifar100": "cifar", "svhn_cropped": "pad_crop",
                "imagenet2012": "imagenet", "imagenet_resized": "cifar"}
# Names people write for a dataset that TFDS spells otherwise (suggested on an unknown name).
_ALIASES = {"fmnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "f_mnist": "fashion_mnist",
            "cifar": "cifar10", "cifar_10": "cifar10", "cifar_100": "cifar100",
            "svhn": "svhn_cropped", "imagenet": "imagenet2012"}
_STATS_SAMPLE = 10000  # examples used to estimate mean/std of a dataset not in NORMALISATION


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    Args:
      name: the dataset's name ('fashion_mnist', 'cifar10', or the name given to from_arrays).
      source: 'debian-idx' (local IDX files), 'tfds' or 'arrays' (Dataset.from_arrays).
      input_shape: the shape of one example, e.g. (28, 28, 1).
      num_classes: the number of labels (labels are 0 .. num_classes-1).
      num_train_examples / num_test_examples: examples in each split.
      mean / std: per-channel normalisation of pixels scaled to [0, 1] (0 and 1 for arrays).
      augmentation: the training augmentation family (augment.FAMILIES; 'none' for arrays).
    """
    name: str
    source: str  # 'debian-idx' (local IDX files), 'tfds' or 'arrays'
    input_shape: Tuple[int, ...]
    num_classes: int
    num_train_examples: int
    num_test_examples: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    augmentation: str


@dataclasses.dataclass
class Dataset:
    """Training and test pipelines of one dataset, made by `load_dataset` (a named dataset) or
    `Dataset.from_arrays` (your own numpy arrays or tf.data examples).

    Use `train_batches(start_epoch)` (endless, `steps_per_epoch` batches per epoch, shuffled
    by (seed, epoch)), `train_epoch(epoch)` (one epoch: `model.fit(data.train_epoch())`) and
    `test` (batched, unshuffled); `info` is the DatasetInfo. Build one through those two
    functions rather than from its fields.

    Args:
      info: the DatasetInfo.
      batch_size: the global batch size (split over replicas by tf.distribute).
      seed: seeds the order of every epoch and the augmentation.
    """
    info: DatasetInfo
    batch_size: int
    seed: int
    _train_examples: tf.data.Dataset  # (image, label) pairs, unshuffled
    _test_examples: tf.data.Dataset
    _shuffle_buffer: int
    _image_size: int
    # The training set as two tensors, when it fits in memory: then every epoch is an exact,
    # stateless permutation (tf.random.experimental.index_shuffle) of (seed, epoch).
    _train_arrays: Optional[Tuple[tf.Tensor, tf.Tensor]] = None
    # What the stored pixels are divided by before normalisation: 255 for images stored as
    # 0..255, 1 for arrays given already scaled (from_arrays).
    _pixel_range: float = 255.0

    @classmethod
    def from_arrays(cls, train, test, batch_size=128, seed=0, num_classes=None, name="arrays"):
        """A Dataset of your own data, used as given (no scaling, normalisation or
        augmentation): e.g. `Dataset.from_arrays((x_train, y_train), (x_test, y_test))`.

        Args:
          train: (x, y): x an array of N examples of any shape (float, scaled as your model
            wants it), y the N integer labels 0 .. num_classes-1; or a tf.data.Dataset of
            unbatched (x, y) examples (a batched one: pass `ds.unbatch()`), read into memory.
          test: the test split, the same way.
          batch_size: the global batch size; the last partial training batch is dropped.
          seed: seeds the (stateless) order of every training epoch.
          num_classes: the number of classes (default: 1 + the largest label).
          name: the name `info.name` reports.
        """
        x_train, y_train = _example_arrays(train, "train")
        x_test, y_test = _example_arrays(test, "test")
        if x_train.shape[1:] != x_test.shape[1:]:
            raise ConfigError(f"train examples have shape {x_train.shape[1:]} but test examples "
                              f"{x_test.shape[1:]}")
        largest = int(max(y_train.max(), y_test.max()))
        num_classes = largest + 1 if num_classes is None else int(num_classes)
        if min(y_train.min(), y_test.min()) < 0 or largest >= num_classes:
            raise ConfigError(f"labels must be integers 0 .. {num_classes - 1}, got "
                              f"{int(min(y_train.min(), y_test.min()))} .. {largest}")
        if batch_size is None or not 1 <= int(batch_size) <= len(x_train):
            raise ConfigError(f"batch_size must be between 1 and the {len(x_train)} training "
                              f"examples, got {batch_size!r}")
        info = DatasetInfo(name=name, source="arrays", input_shape=tuple(x_train.shape[1:]),
                           num_classes=num_classes, num_train_examples=len(x_train),
                           num_test_examples=len(x_test), mean=(0.0,), std=(1.0,),
                           augmentation="none")
        return cls(info=info, batch_size=int(batch_size), seed=int(seed),
                   _train_examples=tf.data.Dataset.from_tensor_slices((x_train, y_train)),
                   _test_examples=tf.data.Dataset.from_tensor_slices((x_test, y_test)),
                   _shuffle_buffer=len(x_train), _image_size=0,
                   _train_arrays=(tf.constant(x_train), tf.constant(y_train)), _pixel_range=1.0)

    @property
    def steps_per_epoch(self):
        """Full batches per epoch (the last partial batch is dropped for static shapes)."""
        return max(1, self.info.num_train_examples // self.batch_size)

    def _normalise(self, image):
        image = tf.cast(image, tf.float32) / self._pixel_range
        return (image - tf.constant(self.info.mean)) / tf.constant(self.info.std)

    def _augment(self, image, seed):
        image = tf.cast(image, tf.float32) / self._pixel_range
        image = augment.train_transform(self.info.augmentation, image, seed, self._image_size)
        return self._normalise(image * self._pixel_range)

    def _epoch_seed(self, epoch):
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(epoch, tf.int64)])

    def _in_memory_epoch(self, epoch):
        images, labels = self._train_arrays
        n = self.info.num_train_examples
        seed = self._epoch_seed(epoch)
        order = tf.data.Dataset.range(n).map(
            lambda i: tf.random.experimental.index_shuffle(i, seed, n - 1))
        if self.info.augmentation == "none":  # fast path: gather whole batches
            order = order.batch(self.batch_size, drop_remainder=True)
            return order.map(lambda j: (self._normalise(tf.gather(images, j)), tf.gather(labels, j)),
                             num_parallel_calls=tf.data.AUTOTUNE)

        def example(position, j):
            aug_seed = tf.random.experimental.stateless_fold_in(seed, position)
            return self._augment(tf.gather(images, j), aug_seed), tf.gather(labels, j)

        examples = order.enumerate().map(example, num_parallel_calls=tf.data.AUTOTUNE)
        return examples.batch(self.batch_size, drop_remainder=True)

    def _streamed_epochs(self, start_epoch):
        # Too large for memory: a shuffle buffer. Deterministic given (seed, start_epoch), but a
        # run resumed at epoch e sees other orders than the uninterrupted run did.
        def example(position, pair):
            seed = tf.stack([tf.constant(self.seed, tf.int64), position])
            return self._augment(pair[0], seed), pair[1]

        examples = self._train_examples.shuffle(
            self._shuffle_buffer, seed=self.seed * 1_000_003 + start_epoch,
            reshuffle_each_iteration=True).repeat()
        examples = examples.enumerate(start=start_epoch * self.info.num_train_examples)
        examples = examples.map(example, num_parallel_calls=tf.data.AUTOTUNE)
        return examples.batch(self.batch_size, drop_remainder=True)

    def train_batches(self, start_epoch=0):
        """Endless batches of epochs start_epoch, start_epoch+1, ... (use with steps_per_epoch)."""
        if self._train_arrays is None:
            return self._streamed_epochs(start_epoch).prefetch(tf.data.AUTOTUNE)
        epochs = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max)
        return epochs.flat_map(self._in_memory_epoch).prefetch(tf.data.AUTOTUNE)

    def train_epoch(self, epoch=0):
        """Exactly one epoch (epoch number `epoch`) of training batches."""
        return self.train_batches(epoch).take(self.steps_per_epoch)

    @property
    def test(self):
        family, size = self.info.augmentation, self._image_size

        def transform(image, label):
            image = tf.cast(image, tf.float32) / self._pixel_range
            image = augment.eval_transform(family, image, size)
            return self._normalise(image * self._pixel_range), label

        examples = self._test_examples.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
        return examples.batch(self.batch_size).prefetch(tf.data.AUTOTUNE)


def _local_dir(name, data_dir):
    return data_dir or os.environ.get(_LOCAL_DIR_ENV[name]) or _LOCAL_DEFAULT_DIR[name]


def _local_files(name, data_dir):
    """{'train': (images, labels), 'test': ...} paths, or None when any file is missing."""
    directory = _local_dir(name, data_dir)
    if not directory:
        return None
    files = {split: tuple(find_idx_file(directory, stem) for stem in stems)
             for split, stems in _IDX_STEMS.items()}
    if any(path is None for pair in files.values() for path in pair):
        return None
    return files


def _missing_local_message(name, data_dir):
    directory = _local_dir(name, data_dir)
    where = f"in {directory}" if directory else "(no folder given)"
    hint = ("install them with `apt-get install dataset-fashion-mnist`, " if name == "fashion_mnist"
            else "")
    return (f"{name} IDX files (train-images-idx3-ubyte.gz, ...) not found {where}: {hint}"
            f"point load_dataset.data_dir or ${_LOCAL_DIR_ENV[name]} at a folder holding them, "
            f"or use load_dataset.source='tfds' to download {name} with TensorFlow Datasets")


def _load_local(name, data_dir, files):
    arrays = {}
    for split, (images_path, labels_path) in files.items():
        try:
            images, labels = read_idx(images_path), read_idx(labels_path)
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"cannot read {name} file: {e}") from None
        if len(images) != len(labels):
            raise DataError(f"{images_path} holds {len(images)} images but {labels_path} "
                            f"{len(labels)} labels")
        arrays[split] = (images[..., None], labels.astype(np.int64))
    shape = arrays["train"][0].shape[1:]
    mean, std = NORMALISATION[name]
    info = DatasetInfo(name=name, source="debian-idx", input_shape=tuple(shape), num_classes=10,
                       num_train_examples=len(arrays["train"][0]),
                       num_test_examples=len(arrays["test"][0]), mean=mean, std=std,
                       augmentation="none")
    datasets = {split: tf.data.Dataset.from_tensor_slices(pair) for split, pair in arrays.items()}
    return info, datasets["train"], datasets["test"]


def _tfds_builder(name, data_dir, download):
    import tensorflow_datasets as tfds  # deferred: importing TFDS costs seconds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError):  # ValueError: unparsable
        key = name.replace("-", "_").lower()
        close = difflib.get_close_matches(key, tfds.list_builders(), n=3)
        if key in _ALIASES:  # short names difflib cannot see ('fmnist' -> 'fashion_mnist')
            close = [_ALIASES[key]] + [c for c in close if c != _ALIASES[key]][:2]
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown dataset {name!r}: not a TFDS dataset.{hint}") from None
    try:
        if download:
            builder.download_and_prepare()
        builder.as_dataset(split="train")  # fails here when the data is not prepared
    except Exception as e:  # download or preparation failed: say what to do, not where it broke
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        manual = (" It needs a manual download first (see its TFDS catalogue page)."
                  if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None) else "")
        raise DataError(f"TFDS dataset {name!r} is not available ({type(e).__name__}: "
                        f"{first_line}). Prepare it where there is internet with "
                        f"`tfds build {name}` and point load_dataset.data_dir at its "
                        f"data folder.{manual}") from None
    return builder


def _estimate_normalisation(examples, channels):
    total, total_sq, count = np.zeros(channels), np.zeros(channels), 0
    for image, _ in examples.take(_STATS_SAMPLE).as_numpy_iterator():
        pixels = image.reshape(-1, channels).astype(np.float64) / 255.0
        total += pixels.sum(0)
        total_sq += (pixels ** 2).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _load_tfds(name, data_dir, download, image_size):
    builder = _tfds_builder(name, data_dir, download)
    info = builder.info
    splits = info.splits
    test_split = "validation" if "validation" in splits and "test" not in splits else "test"
    if not splits and name.startswith("imagenet"):  # split metadata absent (mocked TFDS)
        test_split = "validation"
    if splits and ("train" not in splits or test_split not in splits):
        raise DataError(f"TFDS dataset {name!r} has splits {sorted(splits)}; tf_lottery needs "
                        f"'train' and 'test' (or 'validation')")
    train = builder.as_dataset(split="train", as_supervised=True, shuffle_files=False)
    test = builder.as_dataset(split=test_split, as_supervised=True, shuffle_files=False)

    def size(split, examples):
        if split in splits:
            return int(splits[split].num_examples)
        return int(examples.reduce(np.int64(0), lambda n, _: n + 1))
    image_shape = tuple(info.features["image"].shape)
    if None in image_shape:  # variable-size images (ImageNet): resized to image_size
        image_shape = (image_size, image_size, image_shape[-1])
    base_name = name.split("/")[0].split(":")[0]
    if base_name in NORMALISATION:
        mean, std = NORMALISATION[base_name]
    else:
        mean, std = _estimate_normalisation(train, image_shape[-1])
    info_out = DatasetInfo(
        name=name, source="tfds", input_shape=image_shape,
        num_classes=int(info.features["label"].num_classes),
        num_train_examples=size("train", train), num_test_examples=size(test_split, test),
        mean=mean, std=std,
        augmentation=AUGMENTATION.get(base_name, "none"))
    return info_out, train, test


@gin.configurable
def load_dataset(name="fashion_mnist", source="auto", batch_size=128, seed=0,
                 augmentation="auto", data_dir: Optional[str] = None, download=True,
                 shuffle_buffer=50_000, image_size=224, train_examples=None,
                 test_examples=None, cache=True, in_memory=True):
    """Train/test pipelines and metadata of dataset `name`.

    Args:
      name: 'fashion_mnist' (offline default), 'mnist', or any TFDS name ('cifar10',
        'cifar100', 'svhn_cropped', 'imagenet2012', ...).
      source: 'auto' (local IDX files when present for (fashion_)mnist, else TFDS), 'local'
        or 'tfds'.
      batch_size: the global batch size (split over replicas by tf.distribute).
      seed: seeds shuffling and augmentation; the same seed gives the same batches.
      augmentation: 'auto' (the family's standard one) or one of augment.FAMILIES.
      data_dir: folder of the IDX files (local) or the TFDS data_dir.
      download: let TFDS download and prepare the dataset when it is not there yet.
      shuffle_buffer: elements in the shuffle buffer (capped at the number of examples).
      image_size: side of the crops for datasets of variable image size (ImageNet).
      train_examples / test_examples: keep only the first N examples (quick runs, tests).
      cache: cache the decoded test examples (and streamed training examples) in memory.
      in_memory: hold a fixed-size training set (up to 4 GB) as tensors, which makes every
        epoch an exact function of (seed, epoch); larger sets stream through a shuffle buffer.
    """
    if batch_size is None or int(batch_size) < 1:
        raise ConfigError(f"load_dataset.batch_size must be a positive integer, got {batch_size!r}")
    if source not in ("auto", "local", "tfds"):
        raise ConfigError(f"load_dataset.source must be 'auto', 'local' or 'tfds', got {source!r}")
    if augmentation != "auto" and augmentation not in augment.FAMILIES:
        raise ConfigError(f"load_dataset.augmentation must be 'auto' or one of "
                          f"{augment.FAMILIES}, got {augmentation!r}")
    local_ok = name in _LOCAL_DIR_ENV
    if source == "local" and not local_ok:
        raise ConfigError(f"no local files are known for {name!r}: only "
                          f"{sorted(_LOCAL_DIR_ENV)} can be read from IDX files; use source='tfds'")
    files = _local_files(name, data_dir) if local_ok and source != "tfds" else None
    if files is not None:
        info, train, test = _load_local(name, data_dir, files)
    elif source == "local":
        raise DataError(_missing_local_message(name, data_dir))
    elif local_ok and source == "auto":  # no local files: TFDS, else say how to get either
        try:
            info, train, test = _load_tfds(name, None, download, image_size)
        except DataError as e:
            raise DataError(f"{_missing_local_message(name, data_dir)} ({e})") from None
    else:
        info, train, test = _load_tfds(name, data_dir, download, image_size)
    if augmentation != "auto":
        info = dataclasses.replace(info, augmentation=augmentation)
    if train_examples is not None:
        train = train.take(int(train_examples))
        info = dataclasses.replace(info, num_train_examples=min(int(train_examples),
                                                                info.num_train_examples))
    if test_examples is not None:
        test = test.take(int(test_examples))
        info = dataclasses.replace(info, num_test_examples=min(int(test_examples),
                                                               info.num_test_examples))
    if info.num_train_examples < int(batch_size):
        raise ConfigError(f"load_dataset.batch_size={batch_size} is larger than the "
                          f"{info.num_train_examples} training examples of {name!r}")
    arrays = None
    fixed_size = all(d is not None for d in train.element_spec[0].shape)
    if in_memory and fixed_size and info.num_train_examples * np.prod(info.input_shape) <= 4e9:
        arrays = _as_tensors(train)
        info = dataclasses.replace(info, num_train_examples=int(arrays[1].shape[0]))
    if cache:
        test = test.cache()
        train = train.cache() if arrays is None else train
    return Dataset(info=info, batch_size=int(batch_size), seed=int(seed), _train_examples=train,
                   _test_examples=test,
                   _shuffle_buffer=max(1, min(int(shuffle_buffer), info.num_train_examples)),
                   _image_size=int(image_size), _train_arrays=arrays)


def _example_arrays(split, which):
    """(x float32, y int64) numpy arrays of a split given as (x, y) or as tf.data examples."""
    if isinstance(split, tf.data.Dataset):
        x, y = (t.numpy() for t in _as_tensors(split))
    else:
        try:
            x, y = split
        except (TypeError, ValueError):
            raise ConfigError(f"{which} must be an (x, y) pair of arrays or a tf.data.Dataset "
                              f"of (x, y) examples, got {type(split).__name__}") from None
    x, y = np.asarray(x, np.float32), np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) and not np.all(y == np.round(y)):
        raise ConfigError(f"{which} labels must be one integer class per example (shape "
                          f"(N,)), got shape {y.shape} and dtype {y.dtype}")
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(f"{which} holds {len(x)} examples but {len(y)} labels")
    return x, y.astype(np.int64)


def _as_tensors(examples):
    images, labels = [], []
    for image, label in examples.batch(4096).as_numpy_iterator():
        images.append(image)
        labels.append(label)
    return tf.constant(np.concatenate(images)), tf.constant(np.concatenate(labels).astype(np.int64))

