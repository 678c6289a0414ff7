"""Bad input to bin/train: one readable line on stderr, exit status 1, nothing lost.

Every case runs bin/train for real. Besides TensorFlow's own start-up lines (native logs that
appear before any Python runs), stderr must hold exactly the one `error:` line."""
import hashlib
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.cli.train_process import GIN, ROOT, TINY, run_train
from tests.conftest import needs_fashion_mnist

# TensorFlow's native start-up logs (oneDNN, CUDA probing), written before Python can stop them
_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                         r"|[IWE]\d{4} [\d:. ]+\d+ \w+\.cc:\d+\] )")


def _train(*args):
    return run_train(GIN, *TINY, *args)


def _stderr(result):
    return [line for line in result.stderr.splitlines()
            if line.strip() and not _NATIVE_LOG.match(line)]


def _one_error_line(result):
    """The single `error:` line bin/train printed (and nothing else on stderr)."""
    lines = _stderr(result)
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


def _digests(directory):
    """{relative path: sha256} of every file under `directory`."""
    found = {}
    for folder, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return found


@pytest.fixture
def earlier_run(tmp_path):
    """A workdir holding a completed round of some earlier config."""
    workdir = tmp_path / "run"
    round_dir = workdir / "round_00"
    round_dir.mkdir(parents=True)
    (workdir / "config.gin").write_text("# an earlier config\n")
    (round_dir / "metrics.json").write_text(json.dumps({"round": 0, "test_accuracy": 0.5}))
    np.savez_compressed(round_dir / "masks.npz", conv=np.ones((3, 3, 1, 8), np.uint8))
    (round_dir / "weights.weights.h5").write_bytes(b"weights of round 0")
    return str(workdir)


def _assert_rounds_intact(workdir, before):
    """Every file of a round in `before` ({path: digest}) is still there, unchanged."""
    now = _digests(workdir)
    rounds = {path: digest for path, digest in before.items() if path.startswith("round_")}
    assert rounds and {path: now.get(path) for path in rounds} == rounds


@needs_fashion_mnist
@pytest.mark.parametrize("binding, expected", [
    ("load_dataset.name='fashion_mnst'", ["unknown dataset 'fashion_mnst'", "'fashion_mnist'?"]),
    ("build_model.name='resnet_19'", ["unknown model 'resnet_19'", "Did you mean 'resnet18'?"]),
], ids=["dataset", "model"])
def test_unknown_name_suggests_the_closest(earlier_run, binding, expected):
    before = _digests(earlier_run)
    line = _one_error_line(_train(f"--workdir={earlier_run}", "--resume",
                                  f"--gin_bindings={binding}"))
    assert all(text in line for text in expected), line
    _assert_rounds_intact(earlier_run, before)


def test_missing_data_files_say_where_and_what_to_do(earlier_run, tmp_path):
    empty = tmp_path / "no_data"
    empty.mkdir()
    before = _digests(earlier_run)
    result = _train(f"--workdir={earlier_run}", "--resume",
                    "--gin_bindings=load_dataset.source='local'",
                    f"--gin_bindings=load_dataset.data_dir='{empty}'")
    line = _one_error_line(result)
    assert "fashion_mnist IDX files" in line and f"not found in {empty}" in line
    assert "load_dataset.data_dir" in line
    _assert_rounds_intact(earlier_run, before)


@pytest.mark.parametrize("how", ["read_only_parent", "under_a_file"])
def test_unwritable_workdir(tmp_path, how):
    if how == "read_only_parent":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders; 'under_a_file' fails for root too")
        parent = tmp_path / "read_only"
        parent.mkdir()
        parent.chmod(0o500)
        workdir, reason = parent / "run", "Permission denied"
    else:
        (tmp_path / "a_file").write_text("")
        workdir, reason = tmp_path / "a_file" / "run", "Not a directory"
    try:
        result = _train(f"--workdir={workdir}")
    finally:
        if how == "read_only_parent":
            parent.chmod(0o700)
    assert _one_error_line(result) == f"error: cannot write to workdir {workdir}: {reason}"
    assert not os.path.exists(workdir)


def test_workdir_of_another_config_is_refused_and_left_alone(earlier_run):
    before = _digests(earlier_run)
    line = _one_error_line(_train(f"--workdir={earlier_run}"))
    assert line.startswith(f"error: workdir {earlier_run} holds a run with another config")
    assert "--resume" in line and "--overwrite" in line
    assert _digests(earlier_run) == before  # config.gin included


@pytest.mark.slow
@needs_fashion_mnist
def test_nan_loss_stops_the_round_keeps_the_last_good_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    first = _train(f"--workdir={workdir}", "--gin_bindings=EdgePopupSearch.cycles=1")
    assert first.returncode == 0, first.stderr[-3000:]
    before = _digests(workdir)
    # round 2 with a learning rate that overflows the scores once warm-up has raised it: the
    # first epoch is still finite and checkpointed, the second one becomes NaN
    diverging = ["--resume", "--gin_bindings=TrainingRecipe.learning_rate=1e8",
                 "--gin_bindings=TrainingRecipe.warmup_epochs=2",
                 "--gin_bindings=TrainingRecipe.epochs=2"]
    line = _one_error_line(_train(f"--workdir={workdir}", *diverging))
    match = re.fullmatch(r"error: training diverged \(NaN/inf\) in epoch 2, (step \d+|in "
                         r"variable \S+); training "
                         r"stopped; last good checkpoint: (\S+) \(earlier rounds are intact\)\. "
                         r"Lower the learning rate or check the data\.", line)
    assert match, line
    checkpoint = match.group(2)
    assert checkpoint.endswith(os.path.join("round_01", "checkpoints", "ckpt-1"))
    assert os.path.exists(checkpoint + ".index")
    assert not os.path.exists(os.path.join(workdir, "round_01", "metrics.json"))
    _assert_rounds_intact(workdir, before)
    history = json.load(open(os.path.join(workdir, "round_01", "history.json")))
    assert [h["epoch"] for h in history] == [0]  # the NaN epoch is not recorded

    # a sane learning rate continues round 2 from that checkpoint: epoch 2 only
    fixed = _train(f"--workdir={workdir}", "--resume", "--gin_bindings=TrainingRecipe.epochs=2")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert "Epoch 2/2" in fixed.stdout and "Epoch 1/2" not in fixed.stdout
    assert os.path.exists(os.path.join(workdir, "round_01", "metrics.json"))
    _assert_rounds_intact(workdir, before)


@pytest.mark.slow
@needs_fashion_mnist
def test_truncated_latest_checkpoint_falls_back_and_says_so(tmp_path):
    workdir = str(tmp_path / "run")
    args = [f"--workdir={workdir}", "--gin_bindings=TrainingRecipe.epochs=2"]
    first = _train(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    # as if killed after round 2's last checkpoint, while that checkpoint was being written
    os.remove(os.path.join(workdir, "round_01", "metrics.json"))
    checkpoints = os.path.join(workdir, "round_01", "checkpoints")
    (data,) = [n for n in os.listdir(checkpoints) if n.startswith("ckpt-2.data")]
    with open(os.path.join(checkpoints, data), "r+b") as f:
        f.truncate(16)
    before = _digests(workdir)

    again = _train(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    lines = _stderr(again)
    assert len(lines) == 1, again.stderr[-3000:]
    assert re.search(r"checkpoint \S+round_01/checkpoints/ckpt-2 is unreadable \(\w+\); falling "
                     r"back to the previous one$", lines[0]), lines[0]
    assert "Epoch 2/2" in again.stdout and "Epoch 1/2" not in again.stdout  # from ckpt-1
    assert os.path.exists(os.path.join(workdir, "round_01", "metrics.json"))
    _assert_rounds_intact(workdir, {path: digest for path, digest in before.items()
                                    if path.startswith("round_00")})


def test_a_workdir_that_becomes_unwritable_mid_run_is_one_line():
    """A run cannot be made to lose write access reliably (root writes anywhere): bin/train's
    main, in a process of its own, with a training step that finds the disk full."""
    code = f"""
import os, sys
from tf_lottery.cli import run, train
def no_space(workdir, **kw):
    raise OSError(28, "No space left on device", os.path.join(workdir, "round_03"))
run.train = no_space
train.FLAGS(["bin/train", {GIN!r}, "--workdir=/somewhere/run"])
sys.exit(train.main([]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT,
                                           "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=600)
    assert _one_error_line(result) == (
        "error: cannot write /somewhere/run/round_03: No space left on device; completed "
        "rounds are intact, rerun the same command to continue")


@needs_fashion_mnist
def test_overwrite_checks_the_config_first_and_never_deletes_a_foreign_file(tmp_path):
    """The issue's first case: --overwrite of a folder holding a user's file, with a bad name."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "precious").write_text("x")
    line = _one_error_line(_train(f"--workdir={workdir}", "--overwrite",
                                  "--gin_bindings=build_model.name='nope'"))
    assert line.startswith("error: unknown model 'nope'")
    assert os.listdir(workdir) == ["precious"]
    line = _one_error_line(_train(f"--workdir={workdir}", "--overwrite"))  # a valid config
    assert line.startswith(f"error: --overwrite refuses to delete {workdir}: it holds files "
                           f"tf_lottery did not write (precious); nothing was deleted")
    assert os.listdir(workdir) == ["precious"]


def test_no_arguments_is_one_line_naming_what_is_missing(tmp_path):
    result = run_train(f"--workdir={tmp_path / 'run'}")
    assert _one_error_line(result).startswith(
        "error: missing required gin bindings: Experiment.search, Experiment.model_fn")
    assert not os.path.exists(tmp_path / "run")


@needs_fashion_mnist
def test_a_second_process_on_a_locked_workdir_names_the_holder(earlier_run):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom tf_lottery.workdir import WorkdirLock\n"
         "lock = WorkdirLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\n"
         "time.sleep(300)", earlier_run],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _digests(earlier_run)
        line = _one_error_line(_train(f"--workdir={earlier_run}", "--resume"))
    finally:
        holder.kill()
        holder.wait()
    assert line == (f"error: workdir {earlier_run} is in use by pid {holder.pid} on host "
                    f"{socket.gethostname()} (lock {earlier_run}/.tf_lottery.lock); wait for it "
                    f"to end or use another --workdir")
    assert _digests(earlier_run) == before
