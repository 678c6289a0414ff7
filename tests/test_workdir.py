"""tf_lottery/workdir.py: atomic writes with the user's umask, the marker that --overwrite
requires, and the workdir lock (taken over from a dead holder, refused while one lives)."""
import json
import os
import signal
import socket
import stat
import subprocess
import sys

import gin
import numpy as np
import pytest

from tf_lottery import workdir as workdir_lib
from tests.cli.train_process import ROOT, TINY
from tests.conftest import needs_fashion_mnist
from tf_lottery.cli import run as cli_run
from tf_lottery.config import parse_config
from tf_lottery.errors import ConfigError
from tf_lottery.search import rounds


TINY_BINDINGS = [arg.split("=", 1)[1] for arg in TINY]


@pytest.fixture(autouse=True)
def _no_leaked_bindings():
    yield
    gin.clear_config()  # the bindings parsed here must not leak into other tests


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_round_files_get_the_users_umask_and_no_temporary_is_left(tmp_path, umask_022):
    rounds.write_json(str(tmp_path / "metrics.json"), {"a": 1})
    rounds.save_masks(str(tmp_path / "masks.npz"), {"dense": np.ones((2, 3))})
    with workdir_lib.atomic_write(str(tmp_path / "config.gin")) as f:
        f.write("x = 1\n")
    for name in ("metrics.json", "masks.npz", "config.gin"):
        assert _mode(tmp_path / name) == 0o644, name
    assert sorted(os.listdir(tmp_path)) == ["config.gin", "masks.npz", "metrics.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = str(tmp_path / "metrics.json")
    rounds.write_json(path, {"round": 0})
    with pytest.raises(TypeError):
        rounds.write_json(path, {"round": object()})  # fails halfway through json.dump
    assert json.load(open(path)) == {"round": 0}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_clean_temporary_removes_only_interrupted_writes_inside_own_folders(tmp_path):
    (tmp_path / "round_00" / "checkpoints" / "ckpt-3_temp").mkdir(parents=True)
    (tmp_path / "round_00" / "masks.npz.tmpab12").write_text("torn")
    (tmp_path / "round_00" / "masks.npz").write_text("good")
    (tmp_path / "notes.tmp").write_text("the user's")  # not in a folder tf_lottery owns
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "draft.tmp").write_text("the user's")
    removed = workdir_lib.clean_temporary(str(tmp_path))
    assert sorted(os.path.relpath(p, tmp_path) for p in removed) == [
        "round_00/checkpoints/ckpt-3_temp", "round_00/masks.npz.tmpab12"]
    assert (tmp_path / "round_00" / "masks.npz").exists()
    assert (tmp_path / "notes.tmp").exists() and (tmp_path / "mine" / "draft.tmp").exists()


# -- --overwrite --------------------------------------------------------------------------------

def _finished_workdir(path):
    workdir = str(path)
    os.makedirs(os.path.join(workdir, "round_00"))
    cli_run.prepare_workdir(workdir, "# config\n", resume=False, overwrite=False)
    rounds.write_json(os.path.join(workdir, "round_00", "metrics.json"), {"round": 0})
    return workdir


def test_overwrite_clears_a_marked_workdir_of_own_files(tmp_path):
    workdir = _finished_workdir(tmp_path / "run")
    assert workdir_lib.is_marked(workdir)
    assert cli_run.prepare_workdir(workdir, "# other\n", resume=False, overwrite=True) == "new"
    assert sorted(os.listdir(workdir)) == [workdir_lib.MARKER_FILE, "config.gin"]


@pytest.mark.parametrize("case", ["foreign_file", "no_marker"])
def test_overwrite_refuses_a_folder_it_did_not_create(tmp_path, case):
    workdir = _finished_workdir(tmp_path / "run")
    if case == "foreign_file":
        (tmp_path / "run" / "precious").write_text("x")
    else:
        os.remove(os.path.join(workdir, workdir_lib.MARKER_FILE))
    before = sorted(os.listdir(workdir))
    with pytest.raises(ConfigError, match="--overwrite refuses to delete .*nothing was deleted"):
        cli_run.prepare_workdir(workdir, "# other\n", resume=False, overwrite=True)
    assert sorted(os.listdir(workdir)) == before
    # confirmed explicitly: deleted
    cli_run.prepare_workdir(workdir, "# other\n", resume=False, overwrite=True,
                            overwrite_foreign=True)
    assert "precious" not in os.listdir(workdir) and "round_00" not in os.listdir(workdir)


def test_a_users_folder_is_never_marked(tmp_path):
    (tmp_path / "precious").write_text("x")
    cli_run.prepare_workdir(str(tmp_path), "# config\n", resume=False, overwrite=False)
    assert not workdir_lib.is_marked(str(tmp_path))


def test_resume_with_overwrite_is_refused_before_anything(tmp_path):
    parse_config([os.path.join(ROOT, "gin_configs", "soft_iep.gin")], TINY_BINDINGS)
    workdir = _finished_workdir(tmp_path / "run")
    before = sorted(os.listdir(workdir))
    with pytest.raises(ConfigError, match="--resume and --overwrite contradict"):
        cli_run.train(workdir, resume=True, overwrite=True)
    assert sorted(os.listdir(workdir)) == before


@needs_fashion_mnist
def test_overwrite_checks_the_whole_config_before_deleting_anything(tmp_path):
    parse_config([os.path.join(ROOT, "gin_configs", "soft_iep.gin")],
                 [*TINY_BINDINGS, "build_model.name='nope'"])
    workdir = _finished_workdir(tmp_path / "run")
    before = sorted(os.listdir(workdir))
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        cli_run.train(workdir, overwrite=True)
    assert sorted(os.listdir(workdir)) == before


def test_the_config_of_a_start_without_progress_does_not_block_the_next(tmp_path):
    workdir = str(tmp_path)
    cli_run.prepare_workdir(workdir, "# typo\n", resume=False, overwrite=False)
    assert cli_run.prepare_workdir(workdir, "# fixed\n", resume=False, overwrite=False) == "new"
    assert open(os.path.join(workdir, "config.gin")).read() == "# fixed\n"


# -- the lock -----------------------------------------------------------------------------------

_HOLDER = """
import sys, time
from tf_lottery.workdir import WorkdirLock
lock = WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """A live process holding the lock of tmp_path/run."""
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "run")],
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": ROOT})
    assert process.stdout.readline().strip() == "locked"
    yield process
    process.kill()
    process.wait()


def test_a_locked_workdir_names_its_holder_and_a_dead_holders_lock_is_taken_over(tmp_path,
                                                                               holder):
    workdir = str(tmp_path / "run")
    with pytest.raises(workdir_lib.WorkdirLockedError) as raised:
        workdir_lib.WorkdirLock(workdir).acquire()
    assert f"in use by pid {holder.pid} on host {socket.gethostname()}" in str(raised.value)

    holder.send_signal(signal.SIGKILL)  # dies holding it: the kernel drops the flock
    holder.wait()
    lock = workdir_lib.WorkdirLock(workdir).acquire()
    try:
        assert lock.took_over["pid"] == holder.pid
        assert f"took over the lock of pid {holder.pid}" in lock.describe_take_over()
        assert json.load(open(lock.path))["pid"] == os.getpid()
    finally:
        lock.release()
    assert not os.path.exists(lock.path)  # released on a normal end, the file with it


def test_the_lock_is_exclusive_within_a_process_too(tmp_path):
    first = workdir_lib.WorkdirLock(str(tmp_path)).acquire()
    try:
        with pytest.raises(workdir_lib.WorkdirLockedError, match=f"pid {os.getpid()}"):
            workdir_lib.WorkdirLock(str(tmp_path)).acquire()
    finally:
        first.release()
    with workdir_lib.WorkdirLock(str(tmp_path)) as again:
        assert again.took_over is None
