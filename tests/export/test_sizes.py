import gzip
import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery import masks as masks_lib
from tf_lottery.export import (SIZES_FILE, export_sizes, export_ticket, to_plain_model,
                               weights_sizes)
from tf_lottery.export.sizes import human_bytes, plain_weight_values
from tf_lottery.search.base import RoundSearch
from tf_lottery.training.sparse_model import SparseModel

from tests.export import nets


def _tree(folder):
    """{relative path: (size, mtime_ns)} of every file under `folder`."""
    return {os.path.relpath(os.path.join(d, n), folder): (os.stat(os.path.join(d, n)).st_size,
                                                          os.stat(os.path.join(d, n)).st_mtime_ns)
            for d, _, names in os.walk(folder) for n in names}


def test_export_sizes_of_a_file_and_of_a_directory(tmp_path):
    rng = np.random.default_rng(0)
    noise, zeros = rng.bytes(20_000), bytes(50_000)
    (tmp_path / "noise.bin").write_bytes(noise)
    assert export_sizes(tmp_path / "noise.bin") == {
        "bytes": 20_000, "gzip_bytes": len(gzip.compress(noise, compresslevel=6, mtime=0))}

    folder = tmp_path / "export"
    (folder / "variables").mkdir(parents=True)
    (folder / "variables" / "zeros.bin").write_bytes(zeros)
    (folder / "noise.bin").write_bytes(noise)
    before = _tree(folder)
    sizes = export_sizes(str(folder))
    assert _tree(folder) == before  # nothing written into the export
    assert sizes["bytes"] == 70_000  # the files, not the tar around them
    # one gzip'd tar: the noise does not compress, the zeros almost vanish, headers are small
    assert 20_000 < sizes["gzip_bytes"] < 20_000 + 2_000

    # the same files elsewhere, written later: the same number (no times or owners in it)
    copy = tmp_path / "copy" / "export"
    (copy / "variables").mkdir(parents=True)
    (copy / "noise.bin").write_bytes(noise)
    (copy / "variables" / "zeros.bin").write_bytes(zeros)
    os.utime(copy / "noise.bin", (1, 1))
    assert export_sizes(copy) == sizes

    with pytest.raises(FileNotFoundError, match="nowhere"):
        export_sizes(tmp_path / "nowhere")


def test_weights_sizes_count_what_an_export_holds_and_zeros_compress(tmp_path):
    network = nets.conv_net()
    nets.random_masks(network, density=0.1)
    plain = to_plain_model(network)
    values = plain_weight_values(network)
    # the plain model's weights, in its order: kernels folded, mask state left out
    assert len(values) == len(plain.weights)
    for value, expected in zip(values, plain.get_weights()):
        np.testing.assert_array_equal(value, expected)
        # pruned entries are +0.0 in both (-0.0, a negative θ times 0, compresses worse)
        assert not np.signbit(value[value == 0]).any()
        assert not np.signbit(expected[expected == 0]).any()
    sizes = weights_sizes(network)
    assert sizes["weights_bytes"] == 4 * plain.count_params()

    dense = nets.dense_net(density=1.0)
    sparse = nets.dense_net(density=0.1)
    dense_sizes, sparse_sizes = weights_sizes(dense), weights_sizes(sparse)
    assert dense_sizes["weights_bytes"] == sparse_sizes["weights_bytes"] == 4 * (
        64 * 256 + 256 + 256 * 3 + 3)
    assert dense_sizes["weights_gzip_bytes"] > 0.9 * dense_sizes["weights_bytes"]  # floats
    assert sparse_sizes["weights_gzip_bytes"] < 0.35 * dense_sizes["weights_gzip_bytes"]
    # a ticket given as masks is folded instead of the layers' own masks
    nothing_kept = {name: np.zeros_like(mask) for name, mask in masks_lib.get_masks(dense).items()}
    assert weights_sizes(dense, nothing_kept)["weights_gzip_bytes"] < 2_000


def test_weights_sizes_of_a_strong_ticket_fold_its_top_k_mask():
    network = nets.strong_conv_net()  # signed constants, top-k scores: the mask is chosen
    plain = to_plain_model(network)
    values = plain_weight_values(network)
    assert all(np.array_equal(a, b) for a, b in zip(values, plain.get_weights()))
    assert weights_sizes(network)["weights_bytes"] == 4 * plain.count_params()


def test_round_metrics_hold_the_weights_sizes():
    network = nets.dense_net(density=0.2)
    model = SparseModel(network)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    test = tf.data.Dataset.from_tensor_slices((np.zeros((8, 64), "float32"),
                                               np.zeros(8, "int64"))).batch(8)
    search = RoundSearch(num_rounds=1)
    metrics = search.measure(model, types.SimpleNamespace(test=test, steps_per_epoch=1), [], 1)
    expected = weights_sizes(network, masks_lib.get_masks(network))
    assert expected["weights_bytes"] == 4 * to_plain_model(network).count_params()
    assert {k: metrics[k] for k in expected} == expected


def test_export_ticket_records_the_sizes_of_what_it_wrote(tmp_path):
    network = nets.dense_net(density=0.1)
    paths = export_ticket(network, str(tmp_path / "ticket"))
    with open(tmp_path / "ticket" / SIZES_FILE) as f:
        recorded = json.load(f)
    assert recorded == paths["sizes"]
    assert sorted(recorded) == ["saved_model", "ticket"]
    assert recorded["ticket"]["bytes"] == os.path.getsize(paths["ticket"])
    assert recorded["saved_model"]["bytes"] == sum(
        size for size, _ in _tree(paths["saved_model"]).values())
    for entry in recorded.values():
        assert 0 < entry["gzip_bytes"] < entry["bytes"]


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 999, 1000, 1234, 999_949, 999_950, 12_345_678,
                                     3.2e9, None)] == [
        "0 B", "999 B", "1.0 kB", "1.2 kB", "999.9 kB", "1.0 MB", "12.3 MB", "3.2 GB", "—"]
