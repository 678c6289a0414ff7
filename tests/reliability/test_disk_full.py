"""A full disk or an unwritable file: an OSError naming the path (bin/train prints it as one
`error:` line), no temporary file left, no crash of HDF5, and a rerun with space continues with
nothing lost."""
import errno
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.cli.train_process import GIN, ROOT, TINY, run_train
from tests.conftest import needs_fashion_mnist
from tf_lottery import workdir as workdir_lib
from tf_lottery.search import rounds


def _network():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3, name="dense")(inputs))


@pytest.fixture
def full_disk_at(monkeypatch):
    """full_disk_at(folder): statvfs reports no free byte for files under `folder`."""
    real = os.statvfs

    def install(folder):
        def statvfs(path):
            result = real(path)
            if os.path.abspath(path).startswith(os.path.abspath(str(folder))):
                return os.statvfs_result((result.f_bsize, result.f_frsize, result.f_blocks, 0,
                                          0, *tuple(result)[5:]))
            return result
        monkeypatch.setattr(workdir_lib.os, "statvfs", statvfs)
    return install


def test_without_ram_weights_on_a_full_disk_are_refused_before_hdf5_writes(tmp_path,
                                                                           full_disk_at,
                                                                           monkeypatch):
    monkeypatch.setattr(workdir_lib, "RAM_FOLDER", str(tmp_path / "no_such_ram_folder"))
    path = str(tmp_path / "round_00" / rounds.WEIGHTS_FILE)
    network = _network()
    rounds.save_weights(path, network)
    before = open(path, "rb").read()
    full_disk_at(tmp_path)
    with pytest.raises(OSError) as raised:
        rounds.save_weights(path, network)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename.startswith(path)
    assert open(path, "rb").read() == before  # the old file is intact
    assert os.listdir(tmp_path / "round_00") == [rounds.WEIGHTS_FILE]


def test_weights_are_written_through_ram_and_copied_by_python(tmp_path, monkeypatch):
    """HDF5 never writes into the workdir (it crashes the process when that disk fills): the
    copy does, and its failure names the workdir's file."""
    def no_room(source, destination):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), source)
    monkeypatch.setattr(workdir_lib.shutil, "copyfile", no_room)
    path = str(tmp_path / rounds.WEIGHTS_FILE)
    with pytest.raises(OSError) as raised:
        rounds.save_weights(path, _network())
    assert raised.value.filename == path
    assert os.listdir(tmp_path) == []


def test_tensorflow_write_errors_become_oserrors_naming_the_file(tmp_path):
    directory = str(tmp_path / "round_01" / "checkpoints")
    shard = os.path.join(directory, "ckpt-2_temp", "part-00000-of-00001.data-00000-of-00001")
    error = tf.errors.ResourceExhaustedError(
        None, None, f"{shard}.tempstate1; No space left on device [Op:SaveV2] on "
                    f"/job:localhost/replica:0/task:0/device:CPU:0")
    converted = workdir_lib.write_error(error, directory)
    assert converted.errno == errno.ENOSPC
    assert converted.filename == os.path.join(directory, "ckpt-2")
    assert workdir_lib.write_error(ValueError("a bug"), directory) is None


def test_a_checkpoint_that_cannot_be_written_is_an_oserror(tmp_path, monkeypatch):
    from tf_lottery.training import fitting

    def no_space(self, checkpoint_number=None):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
    monkeypatch.setattr(tf.train.CheckpointManager, "save", no_space)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(), str(tmp_path / "ckpt"), 1)
    callback = fitting.EpochCheckpoint(manager, str(tmp_path / "history.json"))
    callback.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    with pytest.raises(OSError) as raised:
        callback.on_epoch_end(0, {"loss": 1.0})
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "ckpt")


def _tmpfs(path, size):
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not root'})")


@pytest.mark.slow
@needs_fashion_mnist
def test_a_full_disk_ends_in_one_line_and_a_rerun_with_space_loses_nothing(tmp_path):
    reference = tmp_path / "reference"
    args = [GIN, *TINY]
    assert run_train(*args, f"--workdir={reference}").returncode == 0
    disk = tmp_path / "disk"
    _tmpfs(disk, "1700k")  # room for init/ and round 1, not for all of round 2
    try:
        full = run_train(*args, f"--workdir={disk / 'run'}")
        lines = [line for line in full.stderr.splitlines() if line.startswith("error:")]
        assert full.returncode == 1, full.stderr[-3000:]
        assert len(lines) == 1 and "No space left on device" in lines[0], full.stderr[-3000:]
        assert f"cannot write {disk / 'run'}" in lines[0]
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = run_train(*args, f"--workdir={disk / 'run'}")
        assert again.returncode == 0, again.stderr[-3000:]
        for index in (0, 1):
            ours = rounds.load_round_masks(str(disk / "run"), index)
            theirs = rounds.load_round_masks(str(reference), index)
            assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)
        leftovers = [os.path.join(folder, name) for folder, dirs, files in os.walk(disk)
                     for name in files + dirs if workdir_lib.TEMPORARY.search(name)]
        assert leftovers == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)
