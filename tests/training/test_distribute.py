"""tf.distribute: the same masks, scores, schedules and regularisers on several devices as on
one, and multi-worker runs where only the chief writes the workdir.

The runs themselves are in tests/training/distributed_run.py: logical devices and TF_CONFIG
must be set before TensorFlow initialises, so each runs in a fresh process."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import needs_fashion_mnist
from tests.search.helpers import tiny_data, tiny_net
from tf_lottery import experiment as experiment_lib
from tf_lottery.experiment import Experiment
from tf_lottery.search import rounds
from tf_lottery.search.edge_popup import EdgePopupSearch
from tf_lottery.training.recipe import TrainingRecipe
from tf_lottery.training.strategy import is_chief, is_multi_worker, make_strategy, sync_workers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python(*args, env=None, **kw):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "tests.training.distributed_run", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


def test_one_process_strategies_are_chiefs():
    default = make_strategy("default")
    assert is_chief(default) and not is_multi_worker(default)
    sync_workers(default)  # nothing to wait for
    mirrored = make_strategy("mirrored")
    assert is_chief(mirrored)
    # a second MirroredStrategy over the same devices would break the first one's collectives
    assert make_strategy("mirrored") is mirrored


def test_copy_resume_state_takes_rounds_and_init_only(tmp_path):
    chief, mine = tmp_path / "chief", tmp_path / "mine"
    for path in ("init/weights.weights.h5", "round_00/metrics.json",
                 "round_01/checkpoints/ckpt-1.index", "round_01/history.json.tmp",
                 "tensorboard/rounds/events", "config.gin", "ticket/ticket.npz"):
        (chief / path).parent.mkdir(parents=True, exist_ok=True)
        (chief / path).write_text(path)
    mine.mkdir()
    experiment_lib._copy_resume_state(str(chief), str(mine))
    copied = sorted(str(p.relative_to(mine)) for p in mine.rglob("*") if p.is_file())
    assert copied == ["init/weights.weights.h5", "round_00/metrics.json",
                      "round_01/checkpoints/ckpt-1.index"]
    experiment_lib._copy_resume_state(str(tmp_path / "absent"), str(mine))  # nothing to copy


@needs_fashion_mnist
def test_a_non_chief_worker_writes_only_a_private_copy(tmp_path, monkeypatch):
    """Worker processes other than the chief never write the shared workdir; they start from
    the chief's rounds, so every worker resumes the same round."""
    def search(cycles):
        return EdgePopupSearch(variant="soft_lr", cycles=cycles, shrinkage=0.5,
                               recipe=TrainingRecipe(epochs=1))

    shared = str(tmp_path / "shared")
    Experiment(workdir=shared, search=search(1), model_fn=tiny_net, dataset=tiny_data(),
               verbose=0, tensorboard=False).run()
    before = {p: os.path.getmtime(os.path.join(d, p)) for d, _, files in os.walk(shared)
              for p in files}
    monkeypatch.setattr(experiment_lib, "is_chief", lambda strategy: False)
    worker = Experiment(workdir=shared, search=search(2), model_fn=tiny_net,
                        dataset=tiny_data(), verbose=0, tensorboard=True)
    assert not worker.is_chief and worker.chief_workdir == shared
    assert worker.workdir != shared and os.path.isdir(worker.workdir)
    results = worker.run()
    assert [r["round"] for r in results] == [0, 1]
    # round 0 came from the chief (same masks), round 1 was trained in the private copy
    assert rounds.load_metrics(worker.workdir, 0) == rounds.load_metrics(shared, 0)
    assert rounds.is_complete(worker.workdir, 1)
    after = {p: os.path.getmtime(os.path.join(d, p)) for d, _, files in os.walk(shared)
             for p in files}
    assert after == before


def _assert_same(one, many, key, atol=0.0):
    np.testing.assert_allclose(many[key], one[key], atol=atol, rtol=0, err_msg=key)


@pytest.mark.slow
@needs_fashion_mnist
def test_mirrored_over_two_devices_matches_one_device(tmp_path):
    process = _python("mirrored", str(tmp_path))
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    for kind in ("fixed_mask", "edge_popup"):
        one = np.load(tmp_path / f"{kind}_one_device.npz")
        many = np.load(tmp_path / f"{kind}_mirrored.npz")
        assert (int(one["replicas"]), int(many["replicas"])) == (1, 2)
        assert sorted(one.files) == sorted(many.files)
        for key in one.files:
            if "/mask/" in key or key.endswith(("/mask", "ever_selected", "keep_fraction")):
                _assert_same(one, many, key)  # masks and rule state: exactly equal
            elif key.startswith("final/"):
                _assert_same(one, many, key, atol=2e-4)
            elif key != "replicas":
                _assert_same(one, many, key, atol=1e-4)  # losses, accuracies
        # the ticket changed between rounds, so equal masks are not equal by construction
        assert any((one[f"round0/mask/{n}"] != one[f"round1/mask/{n}"]).any()
                   for n in ("conv", "fc", "output"))
        if kind == "fixed_mask":
            # the per-batch schedule and the per-step hook both moved their ghost's beta
            for ghost in ("ghost_conv", "ghost_fc"):
                assert float(one[f"final/{ghost}/beta"]) > 1.0
                _assert_same(one, many, f"final/{ghost}/beta")
        else:  # edge-popup trains scores only: the weights stay at their initialisation
            assert (one["final/fc/scores"] != 0).any()
            _assert_same(one, many, "final/fc/kernel")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
@needs_fashion_mnist
def test_multi_worker_round_agrees_and_only_the_chief_writes(tmp_path):
    workdir = str(tmp_path / "run")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(_python("multi_worker", str(tmp_path / f"worker{index}.json"), workdir,
                                 env={"TF_CONFIG": config}))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=900)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    seen = [json.load(open(tmp_path / f"worker{i}.json")) for i in range(2)]
    chief, other = seen
    assert chief["is_chief"] and not other["is_chief"]
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["workdir"] == workdir and other["workdir"] != workdir
    assert chief["wrote_round"] and other["wrote_round"]
    assert not os.path.exists(other["workdir"])  # the private copy is gone with its process
    # both workers hold the same ticket, and the chief's workdir has it
    masks = [np.load(tmp_path / f"worker{i}.json.npz") for i in range(2)]
    on_disk = rounds.load_round_masks(workdir, 0)
    for name in on_disk:
        np.testing.assert_array_equal(masks[0][name], masks[1][name])
        np.testing.assert_array_equal(masks[0][name], on_disk[name])
    assert chief["test_accuracy"] == pytest.approx(other["test_accuracy"])
    # one writer: one event file per TensorBoard folder, the config written once
    for folder in ("rounds", "round_00/train"):
        events = os.listdir(os.path.join(workdir, "tensorboard", folder))
        assert len(events) == 1, (folder, events)
    assert os.path.exists(os.path.join(workdir, "config.gin"))
