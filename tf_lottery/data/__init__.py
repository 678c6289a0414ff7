"""Datasets as tf.data pipelines (see datasets.py)."""
from tf_lottery.data.datasets import Dataset, DatasetInfo, load_dataset

__all__ = ["Dataset", "DatasetInfo", "load_dataset"]
