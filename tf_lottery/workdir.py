"""A workdir nothing can corrupt: the one home of how tf_lottery writes, claims and clears a run
directory (the round structure itself is search/rounds.py).

* Every file is written to a temporary file next to it, then renamed over it (`atomic_path`,
  `atomic_write`): a kill, a full disk or an unwritable file leaves the old file or the new one,
  never half of one. Temporary files carry `.tmp` in their name, are removed when a write fails,
  and orphans of a killed process are removed by `clean_temporary` on the next start. Files get
  the user's umask (not mkstemp's 0600).
* A disk that fills up or a file that cannot be written raises OSError with the path
  (`io_errors` translates TensorFlow's and HDF5's own errors), which bin/train prints as one
  `error:` line.
* A workdir created by tf_lottery holds a marker file (MARKER_FILE). `--overwrite` deletes only
  a marked workdir whose entries are all tf_lottery's, unless the user confirms deleting foreign
  files too (`clear`).
* One process at a time: `WorkdirLock` holds an advisory lock (fcntl.flock) on LOCK_FILE for the
  whole run; the kernel drops it when the process ends, however it ends. The file names the
  holder (pid, host), so a second process says who holds it, and a start that finds the name of
  a process that died without clearing it says that it takes over.
"""
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time

from tf_lottery.errors import ConfigError

MARKER_FILE = ".tf_lottery_workdir"
LOCK_FILE = ".tf_lottery.lock"
CONFIG_FILE = "config.gin"
PYTHON_RUN_FILE = "python_run.json"  # what tf_lottery.search.run ran (its config.gin)
TEMPORARY = re.compile(r"\.tmp|_temp$")  # ours (atomic_path) and tf.train.Checkpoint's
# What tf_lottery writes at the top of a workdir; anything else is the user's.
OWN_ENTRIES = re.compile(r"^(\.tf_lottery_workdir|\.tf_lottery\.lock|config\.gin|python_run\.json|"
                         r"operative_config\.gin|(init|round_\d+)(\.damaged(-\d+)?)?|"
                         r"tensorboard|ticket|teacher)$")
# Entries that hold a run's progress (what a failed start must not have produced).
PROGRESS = re.compile(r"^(init|round_\d+)$")


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()


# -- writing ----------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """A temporary path next to `path` to write to; renamed over `path` when the block ends
    without an error, removed otherwise. `suffix` ends the temporary name (some writers insist
    on an extension, e.g. '.weights.h5')."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".tmp",
                               suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """open(path, mode) through a temporary file (see atomic_path); flushed to disk before the
    rename, so that a full disk shows here and not later."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_folder(path):
    """A temporary folder next to `path` to fill; it replaces `path` (a folder) when the block
    ends without an error, and is removed otherwise (the old folder is then untouched)."""
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=os.path.basename(path) + ".tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~UMASK)
        if os.path.isdir(path):
            old = tempfile.mkdtemp(dir=parent, prefix=os.path.basename(path) + ".tmp-old")
            os.replace(path, os.path.join(old, "x"))
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_space(path, needed_bytes):
    """Raise OSError(ENOSPC) naming `path` unless its file system has `needed_bytes` free.
    HDF5 crashes the process (segmentation fault, h5py 3.14) when the disk fills mid-write, so
    the weights writers check first. (Another process filling the disk between the check and
    the write can still cause it.)"""
    directory = os.path.dirname(path) or "."
    stats = os.statvfs(directory)
    if stats.f_bavail * stats.f_frsize < needed_bytes:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


RAM_FOLDER = "/dev/shm"


@contextlib.contextmanager
def staged_in_memory(path, needed_bytes, suffix=""):
    """A path in RAM (/dev/shm, when it exists and has room) to write a file that will be
    copied to `path` with plain Python I/O when the block ends, so that a full disk is an
    OSError and not a crash of the writing library; else `path` itself, after ensure_space."""
    try:
        ensure_space(os.path.join(RAM_FOLDER, "x"), 2 * needed_bytes)
        fd, stage = tempfile.mkstemp(dir=RAM_FOLDER, prefix="tf_lottery.tmp", suffix=suffix)
    except OSError:
        ensure_space(path, needed_bytes)
        yield path
        return
    os.close(fd)
    try:
        yield stage
        try:
            shutil.copyfile(stage, path)
        except OSError as e:
            raise OSError(e.errno, e.strerror, path) from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(stage)


_TF_PATH = re.compile(r"(/[^\s:;,'\"]+)")


@contextlib.contextmanager
def io_errors(path):
    """Turn TensorFlow's and HDF5's write failures inside the block into OSError naming the file
    (TensorFlow raises ResourceExhaustedError on a full disk, h5py a bare OSError)."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.ResourceExhaustedError as e:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), _named_path(e, path)) from None
    except tf.errors.PermissionDeniedError as e:
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), _named_path(e, path)) from None
    except (tf.errors.FailedPreconditionError, tf.errors.UnknownError,
            tf.errors.DataLossError, tf.errors.InternalError) as e:
        text = str(e)
        if "space" in text.lower() or "ENOSPC" in text:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), _named_path(e, path)) from None
        raise
    except OSError as e:
        if e.errno is None:  # h5py: "Unable to synchronously create file (... errno = 28 ...)"
            code = re.search(r"errno = (\d+)", str(e))
            code = int(code.group(1)) if code else errno.EIO
            raise OSError(code, os.strerror(code), path) from None
        if not e.filename or str(e.filename).startswith(f"{path}.tmp"):  # or our temporary
            raise OSError(e.errno, e.strerror, path) from None
        raise


def _named_path(error, default):
    """The file a TensorFlow error names when it is under `default` (a file or folder being
    written), else `default` (its messages also hold device names such as /job:localhost)."""
    root = os.path.dirname(default) or default
    found = [p for p in _TF_PATH.findall(getattr(error, "message", "") or str(error))
             if p.startswith(root)]
    if not found:
        return default
    # the file being written, not its temporary: tf.train.Checkpoint's shard of ckpt-N (ckpt-N),
    # a file inside a temporary folder of atomic_folder, a temporary of atomic_path
    return re.sub(r"(_temp|\.tmp[^/]*)(/.*)?$", "", found[0])


# errno values that mean "this path cannot be written" (not a bug of the program)
CANNOT_WRITE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EFBIG, errno.EIO)


def write_error(error, default_path):
    """OSError(errno, strerror, path) for an error that says a file could not be written (an
    OSError with one of CANNOT_WRITE, TensorFlow's ResourceExhausted/PermissionDenied or a
    message saying the disk is full), else None."""
    if isinstance(error, OSError):
        return error if error.errno in CANNOT_WRITE else None
    try:
        with io_errors(default_path):
            raise error
    except OSError as converted:
        return converted
    except BaseException:  # noqa: BLE001 (not a write error: the caller re-raises the original)
        return None


# -- checksums ----------------------------------------------------------------------------------

MANIFEST_FILE = "manifest.json"


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory, names):
    """directory/manifest.json: {name: {sha256, bytes}} of the files `names` (written last:
    its presence says the folder is complete)."""
    files = {name: {"sha256": sha256_file(os.path.join(directory, name)),
                    "bytes": os.path.getsize(os.path.join(directory, name))} for name in names}
    with atomic_write(os.path.join(directory, MANIFEST_FILE)) as f:
        json.dump({"files": files}, f, indent=2, sort_keys=True)


def verify_manifest(directory):
    """None when directory/manifest.json is absent (a folder written before manifests) or every
    file it lists has its checksum; else one line saying what is wrong."""
    path = os.path.join(directory, MANIFEST_FILE)
    if not os.path.exists(path):
        return None
    name = os.path.basename(os.path.normpath(directory))
    try:
        with open(path) as f:
            files = json.load(f)["files"]
        expected = {file: entry["sha256"] for file, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{name}/{MANIFEST_FILE} is unreadable ({type(e).__name__})"
    for file, digest in sorted(expected.items()):
        try:
            actual = sha256_file(os.path.join(directory, file))
        except OSError as e:
            return f"{name}/{file} is unreadable ({e.strerror})"
        if actual != digest:
            return f"{name}/{file} does not match its checksum in {MANIFEST_FILE}"
    return None


def set_aside(path):
    """Rename a damaged folder to <name>.damaged[-N] (kept for inspection, never deleted);
    returns the new path."""
    target, n = f"{path}.damaged", 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.damaged-{n}"
    os.replace(path, target)
    return target


# -- cleaning ----------------------------------------------------------------------------------

def clean_temporary(workdir):
    """Remove what killed writes left (`*.tmp*` files, `ckpt-N_temp/` folders) inside the
    directories tf_lottery owns; returns the paths removed."""
    removed = []
    if not os.path.isdir(workdir):
        return removed
    for entry in os.listdir(workdir):
        top = os.path.join(workdir, entry)
        if not OWN_ENTRIES.match(entry) or not os.path.isdir(top):
            continue
        for folder, dirs, files in os.walk(top):
            for name in [d for d in dirs if TEMPORARY.search(d)]:
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
                removed.append(os.path.join(folder, name))
                dirs.remove(name)
            for name in files:
                if TEMPORARY.search(name):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(folder, name))
                        removed.append(os.path.join(folder, name))
    return removed


def has_progress(workdir):
    """Whether the workdir holds any of a run's state (init/ or a round)."""
    return os.path.isdir(workdir) and any(PROGRESS.match(n) for n in os.listdir(workdir))


def foreign_entries(workdir):
    return sorted(n for n in os.listdir(workdir) if not OWN_ENTRIES.match(n))


def is_marked(workdir):
    return os.path.isfile(os.path.join(workdir, MARKER_FILE))


def mark(workdir):
    """Write the marker that says tf_lottery created this workdir (only where every entry is
    tf_lottery's: a folder of the user's never becomes deletable by --overwrite)."""
    if is_marked(workdir) or foreign_entries(workdir):
        return
    import tf_lottery

    with atomic_write(os.path.join(workdir, MARKER_FILE)) as f:
        json.dump({"created_by": "tf_lottery", "version": tf_lottery.__version__,
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, f)


def clear(workdir, delete_foreign=False):
    """--overwrite: delete the contents of a tf_lottery workdir (not the folder nor the lock
    held on it). Refuses, deleting nothing, a folder without the marker or with entries that
    are not tf_lottery's, unless delete_foreign."""
    if not os.path.isdir(workdir):
        return
    entries = [n for n in os.listdir(workdir) if n != LOCK_FILE]
    if not entries:
        return
    if not delete_foreign:
        foreign = foreign_entries(workdir)
        if foreign or not is_marked(workdir):
            why = (f"it holds files tf_lottery did not write ({', '.join(foreign[:3])}"
                   f"{', ...' if len(foreign) > 3 else ''})" if foreign
                   else f"it has no {MARKER_FILE} marker (not created by tf_lottery)")
            raise ConfigError(f"--overwrite refuses to delete {workdir}: {why}; nothing was "
                              f"deleted. Use another --workdir, or add --overwrite_foreign to "
                              f"delete everything in it")
    for name in entries:
        path = os.path.join(workdir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


# -- the lock ----------------------------------------------------------------------------------

class WorkdirLockedError(ConfigError):
    """Another live process holds the workdir."""


class WorkdirLock:
    """An exclusive advisory lock on `workdir` (created if missing) for this process.

    `acquire()` raises WorkdirLockedError naming the holder's pid and host; when the lock file
    names a process that is gone (killed, crashed), it takes the lock over and `took_over`
    says whose it was. `release()` (also on `with` exit) removes the lock file.
    """

    def __init__(self, workdir):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILE)
        self.took_over = None
        self._file = None

    def acquire(self):
        os.makedirs(self.workdir, exist_ok=True)
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_holder(f)
                f.close()
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
                       if holder else "another process")
                raise WorkdirLockedError(
                    f"workdir {self.workdir} is in use by {who} (lock {self.path}); wait for "
                    f"it to end or use another --workdir") from None
            try:  # the file may have been removed by its last holder between open and flock
                same = os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()
        previous = _read_holder(f)
        if previous:
            self.took_over = previous
        f.seek(0)
        f.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, f)
        f.flush()
        os.chmod(self.path, 0o666 & ~UMASK)
        self._file = f
        return self

    def describe_take_over(self):
        if not self.took_over:
            return None
        return (f"[tf_lottery] took over the lock of pid {self.took_over.get('pid', '?')} on "
                f"host {self.took_over.get('host', '?')}, which ended without releasing it")

    def release(self, remove=True):
        if self._file is None:
            return
        if remove:
            with contextlib.suppress(OSError):
                os.remove(self.path)
        self._file.close()  # closing drops the flock
        self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_holder(f):
    try:
        f.seek(0)
        return json.loads(f.read() or "null")
    except (OSError, ValueError):
        return None
