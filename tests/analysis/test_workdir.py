import os
import shutil

import keras
import numpy as np
import pytest

from tests.analysis.workdir_runs import edge_popup, magnitude  # noqa: F401 (fixtures)
from tests.conftest import needs_fashion_mnist
from tf_lottery.analysis.angular import angular_distance_matrix
from tf_lottery.analysis.workdir import Workdir, lmc_metrics, read_kernels
from tf_lottery.errors import DataError
from tf_lottery.layers import MaskedDense
from tf_lottery.layers.mask_rules import BernoulliScores, FixedMask, SigmoidScores, TopKScores
from tf_lottery.search import rounds


def _assert_same_network(disk, live):
    kernels, masks = disk
    live_kernels, live_masks = live
    assert sorted(kernels) == sorted(live_kernels)
    for name in kernels:
        np.testing.assert_array_equal(kernels[name], live_kernels[name])
    assert sorted(masks) == sorted(live_masks)
    for name in masks:
        np.testing.assert_array_equal(masks[name], live_masks[name])


@needs_fashion_mnist
@pytest.mark.parametrize("which", ["edge_popup", "magnitude"])
def test_kernels_and_masks_from_disk_are_the_live_ones(request, which):
    run = request.getfixturevalue(which)
    workdir = Workdir(run.workdir)
    assert [r.name for r in workdir.complete_rounds] == ["round_00", "round_01"]
    for r, live in zip(workdir.complete_rounds, run.round_states):
        _assert_same_network(workdir.network(r), live)
    init = workdir.init_kernels()
    assert sorted(init) == sorted(run.init_state[0])
    for name in init:
        np.testing.assert_array_equal(init[name], run.init_state[0][name])


@needs_fashion_mnist
@pytest.mark.parametrize("which", ["edge_popup", "magnitude"])
def test_angular_distance_matrix_from_disk_equals_the_live_one(request, which):
    run = request.getfixturevalue(which)
    names, distances = Workdir(run.workdir).angular_distances()
    live = angular_distance_matrix(run.round_states, initialization=run.init_state[0])
    assert names == ["round_00", "round_01", "init"]
    np.testing.assert_allclose(distances, live, rtol=0, atol=1e-12)
    if which == "magnitude":  # trained weights: the rounds and init lie at nonzero angles
        assert distances[0, 1] > 1e-3 and distances[0, 2] > 1e-3 and distances[1, 2] > 1e-3
    else:  # a strong ticket keeps its weights: same weights on shared connections
        np.testing.assert_allclose(distances, 0.0, atol=1e-6)


@needs_fashion_mnist
def test_mask_overlap_is_intersection_over_union_of_the_round_masks(edge_popup):
    names, overlaps = Workdir(edge_popup.workdir).mask_overlaps()
    (_, first), (_, second) = edge_popup.round_states
    both = sum(np.sum(first[n] * second[n]) for n in first)
    either = sum(np.sum(np.maximum(first[n], second[n])) for n in first)
    assert names == ["round_00", "round_01"]
    assert overlaps[0, 1] == overlaps[1, 0] == pytest.approx(both / either)
    assert 0 < overlaps[0, 1] < 1 and overlaps[0, 0] == overlaps[1, 1] == 1


@needs_fashion_mnist
def test_partly_finished_workdir_says_the_last_round_is_unfinished(edge_popup, tmp_path):
    path = shutil.copytree(edge_popup.workdir, tmp_path / "partial")
    os.remove(path / "round_01" / rounds.METRICS_FILE)
    workdir = Workdir(str(path))
    assert [r.name for r in workdir.complete_rounds] == ["round_00"]
    assert not workdir.finished and workdir.num_rounds == 2
    assert "round_01 has no metrics.json: unfinished" in workdir.lacks()
    names, distances = workdir.angular_distances()
    assert names == ["round_00", "init"] and distances.shape == (2, 2)


def test_lacks_names_every_missing_piece(tmp_path):
    rounds.write_json(str(tmp_path / "round_00" / rounds.METRICS_FILE),
                      {"round": 0, "num_rounds": 5, "algorithm": "x"})
    os.makedirs(tmp_path / "round_02")
    rounds.save_masks(str(tmp_path / "round_02" / rounds.MASKS_FILE), {"a": np.ones((2, 2))})
    (tmp_path / "round_03").mkdir()
    (tmp_path / "round_03" / rounds.METRICS_FILE).write_text("{not json")
    lacks = Workdir(str(tmp_path)).lacks()
    assert lacks == [
        "round_01 is missing",
        "round_00 has no masks.npz", "round_00 has no weights.weights.h5",
        "round_02 has no metrics.json: unfinished", "round_02 has no weights.weights.h5",
        lacks[5],  # the JSON parser's own words follow the file name
        "round_03 has no masks.npz", "round_03 has no weights.weights.h5",
        "round_04 of 5 rounds not started",
        "no init/weights.weights.h5: no initialisation to compare with",
        "no config.gin (run without bin/train?)"]
    assert lacks[5].startswith("round_03/metrics.json is unreadable")
    assert Workdir(str(tmp_path)).label == "x"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no round_NN directory: no round has started" in Workdir(str(empty)).lacks()
    with pytest.raises(DataError, match="does not exist"):
        Workdir(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("rule", [FixedMask(), TopKScores(0.5), SigmoidScores(),
                                  BernoulliScores()], ids=lambda rule: type(rule).__name__)
def test_read_kernels_takes_each_layers_kernel_and_checks_masks(tmp_path, rule):
    inputs = keras.Input((3,))
    hidden = MaskedDense(4, name="hidden", mask_rule=rule)(inputs)
    normalised = keras.layers.BatchNormalization(name="bn")(hidden)
    outputs = keras.layers.Dense(2, name="plain")(normalised)
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "w.weights.h5")
    model.save_weights(path)
    kernels = read_kernels(path, {"hidden": np.ones((3, 4))})
    assert sorted(kernels) == ["hidden", "plain"]  # BatchNorm has no kernel
    np.testing.assert_array_equal(kernels["hidden"], model.get_layer("hidden").raw_kernel.numpy())
    np.testing.assert_array_equal(kernels["plain"], model.get_layer("plain").kernel.numpy())
    with pytest.raises(DataError, match="shape"):
        read_kernels(path, {"hidden": np.ones((4, 3))})
    with pytest.raises(DataError, match="no kernel for masked layer 'bn'"):
        read_kernels(path, {"bn": np.ones(4)})
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="cannot read"):
        read_kernels(str(broken))


def test_lmc_metrics_barrier_by_hand():
    curve = {"alpha": np.array([0.0, 0.5, 1.0]), "error": np.array([0.1, 0.3, 0.2]),
             "loss": np.array([1.0, 2.0, 1.5])}
    entry = lmc_metrics(curve, between=[0, 1])
    # max error 0.3 minus the mean of the end errors (0.1 + 0.2) / 2
    assert entry["barrier"] == pytest.approx(0.15)
    assert entry["alphas"] == [0.0, 0.5, 1.0] and entry["errors"] == [0.1, 0.3, 0.2]
    assert entry["losses"] == [1.0, 2.0, 1.5] and entry["between"] == [0, 1]


def test_activation_sparsity_from_metrics_or_analysis_records(tmp_path):
    rounds.write_json(str(tmp_path / "round_00" / rounds.METRICS_FILE), {
        "analysis": [{"epoch": 0, "activation_sparsity/a": 0.1},
                     {"epoch": 1, "activation_sparsity/a": 0.3, "activation_sparsity": 0.3}]})
    rounds.write_json(str(tmp_path / "round_01" / rounds.METRICS_FILE), {
        "activation_sparsity": {"a": 0.5},
        "analysis": [{"epoch": 0, "activation_sparsity/a": 0.9}]})
    rounds.write_json(str(tmp_path / "round_02" / rounds.METRICS_FILE), {"analysis": []})
    workdir = Workdir(str(tmp_path))
    first, second, third = workdir.complete_rounds
    assert workdir.activation_sparsity(first) == {"a": 0.3}  # the last record
    assert workdir.activation_sparsity(second) == {"a": 0.5}  # the explicit key wins
    assert workdir.activation_sparsity(third) == {}
