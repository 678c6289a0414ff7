"""Checksums: every complete round (and init/) carries a manifest written last; a damaged round is
reported in one line, set aside with the rounds computed from it and recomputed, never trusted;
bin/report and ticket loading check them; the ticket file carries its own checksum and checks
its packed masks and weights against its header."""
import json
import os
import shutil

import numpy as np
import pytest

from tests.cli.train_process import GIN, TINY, run_train
from tests.conftest import needs_fashion_mnist
from tests.export import nets
from tf_lottery.analysis.workdir import Workdir
from tf_lottery.errors import ConfigError, DataError
from tf_lottery.export import load_ticket, read_ticket_masks, save_ticket
from tf_lottery.search import rounds


def _digests(folder):
    from tf_lottery.workdir import sha256_file

    return {name: sha256_file(os.path.join(folder, name)) for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


def _fake_round(workdir, index, seal=True):
    folder = rounds.round_dir(workdir, index)
    os.makedirs(folder)
    rounds.save_masks(os.path.join(folder, rounds.MASKS_FILE), {"dense": np.ones((4, 3))})
    with open(os.path.join(folder, rounds.WEIGHTS_FILE), "wb") as f:
        f.write(os.urandom(256))
    rounds.write_json(os.path.join(folder, rounds.METRICS_FILE), {"round": index})
    if seal:
        rounds.seal(folder)
    return folder


@pytest.fixture
def three_rounds(tmp_path):
    workdir = str(tmp_path / "run")
    for index in range(3):
        _fake_round(workdir, index)
    return workdir


@pytest.mark.parametrize("damage", ["truncate", "garble", "delete"])
def test_a_damaged_round_and_the_later_ones_are_set_aside_and_earlier_ones_untouched(
        three_rounds, damage):
    good = _digests(rounds.round_dir(three_rounds, 0))
    path = os.path.join(rounds.round_dir(three_rounds, 1), rounds.MASKS_FILE)
    if damage == "truncate":
        with open(path, "r+b") as f:
            f.truncate(10)
    elif damage == "garble":
        with open(path, "r+b") as f:
            f.seek(40)
            f.write(b"\xff" * 8)
    else:
        os.remove(path)
    lines = rounds.set_aside_damaged(three_rounds, report=lambda line: None)
    assert len(lines) == 2
    assert lines[0].startswith("round_01 fails verification (round_01/masks.npz ")
    assert lines[0].endswith("set aside as round_01.damaged, to be recomputed")
    assert lines[1].startswith("round_02 was computed from it; set aside as round_02.damaged")
    assert rounds.completed_rounds(three_rounds) == [0]
    assert _digests(rounds.round_dir(three_rounds, 0)) == good
    assert sorted(os.listdir(three_rounds)) == ["round_00", "round_01.damaged",
                                                "round_02.damaged"]


def test_intact_rounds_pass_and_a_round_without_manifest_is_sealed(three_rounds):
    os.remove(os.path.join(rounds.round_dir(three_rounds, 2), rounds.MANIFEST_FILE))
    assert rounds.set_aside_damaged(three_rounds, report=lambda line: None) == []
    assert os.path.exists(os.path.join(rounds.round_dir(three_rounds, 2), rounds.MANIFEST_FILE))
    assert rounds.completed_rounds(three_rounds) == [0, 1, 2]


def test_report_and_round_masks_refuse_a_damaged_round(three_rounds):
    with open(os.path.join(rounds.round_dir(three_rounds, 2), rounds.METRICS_FILE), "a") as f:
        f.write(" ")  # still valid JSON, not the file the round wrote
    workdir = Workdir(three_rounds)
    assert [r.index for r in workdir.complete_rounds] == [0, 1]
    assert any("round_02/metrics.json does not match its checksum" in line
               for line in workdir.lacks())
    with pytest.raises(DataError, match="round_02/metrics.json does not match"):
        rounds.load_round_masks(three_rounds, 2)
    assert set(rounds.load_round_masks(three_rounds, 1)) == {"dense"}


# -- the ticket file --------------------------------------------------------------------------

@pytest.fixture
def ticket(tmp_path):
    network = nets.conv_net()
    nets.random_masks(network, density=0.5)
    return save_ticket(network, str(tmp_path / "ticket.npz"))


def _rewrite(path, change):
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def _header(arrays):
    return json.loads(arrays["header"].tobytes().decode())


def _set_header(arrays, header):
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)


@pytest.mark.parametrize("checksum", [True, False], ids=["with_checksum", "older_file"])
def test_a_ticket_whose_mask_bits_are_cut_short_is_refused(ticket, checksum):
    def cut(arrays):
        arrays["mask_0"] = arrays["mask_0"][: arrays["mask_0"].size // 2]
        if not checksum:
            header = _header(arrays)
            del header["checksum"]
            _set_header(arrays, header)
    _rewrite(ticket, cut)
    with pytest.raises(ConfigError, match="is damaged"):
        read_ticket_masks(ticket)


def test_a_ticket_with_flipped_bits_fails_its_checksum(ticket):
    def flip(arrays):
        arrays["weight_0"] = arrays["weight_0"].copy()
        arrays["weight_0"].flat[0] += 1.0
    _rewrite(ticket, flip)
    with pytest.raises(ConfigError, match="do not match the checksum in its header"):
        load_ticket(ticket)


def test_a_ticket_mask_whose_count_differs_from_its_header_is_refused(ticket):
    def recount(arrays):  # a consistent checksum, a header that lies about the mask
        header = _header(arrays)
        header["masks"][0]["remaining"] += 1
        del header["checksum"]
        _set_header(arrays, header)
    _rewrite(ticket, recount)
    with pytest.raises(ConfigError, match=r"keeps \d+ weights, its header says \d+"):
        read_ticket_masks(ticket)


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04truncated"])
def test_a_file_that_is_not_a_ticket_is_one_config_error(tmp_path, content):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="not a tf_lottery ticket file"):
        load_ticket(str(path))


@pytest.mark.slow
@needs_fashion_mnist
def test_finite_garbage_in_init_is_found_and_the_run_recomputed_identically(tmp_path):
    workdir = str(tmp_path / "run")
    args = [GIN, *TINY, f"--workdir={workdir}"]
    assert run_train(*args).returncode == 0
    reference = {i: rounds.load_round_masks(workdir, i) for i in (0, 1)}
    init = os.path.join(rounds.init_dir(workdir), rounds.WEIGHTS_FILE)
    size = os.path.getsize(init)
    with open(init, "r+b") as f:  # finite garbage over the middle of the kernels
        f.seek(size // 2)
        f.write(np.full(64, 0.5, np.float32).tobytes())
    shutil.rmtree(os.path.join(workdir, "ticket"))
    again = run_train(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "warning: init fails verification (init/weights.weights.h5 does not match" in \
        again.stderr
    assert "/step" in again.stdout  # recomputed (Keras trained), not reloaded
    for index in (0, 1):
        masks = rounds.load_round_masks(workdir, index)
        assert all(np.array_equal(masks[k], reference[index][k]) for k in masks)
    assert os.path.isdir(workdir + "/init.damaged") and os.path.isdir(workdir + "/round_00.damaged")
