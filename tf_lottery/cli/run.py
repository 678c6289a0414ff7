"""Run the gin-configured Experiment in its workdir, then export its final ticket (bin/train)."""
import contextlib
import os
import shlex
import sys

import gin

from tf_lottery import workdir as workdir_lib
from tf_lottery.config import explain_construction_error, requested_config
from tf_lottery.errors import ConfigError, TfLotteryError
from tf_lottery.experiment import Experiment

CONFIG_FILE = workdir_lib.CONFIG_FILE


def prepare_workdir(workdir, config_text, resume, overwrite, overwrite_foreign=False):
    """Check the (locked) workdir against the requested config and write config.gin; returns
    'new', 'same' or 'resumed'. Nothing is deleted or written before every check has passed."""
    path = os.path.join(workdir, CONFIG_FILE)
    if overwrite:
        workdir_lib.clear(workdir, delete_foreign=overwrite_foreign)
    state = "new"
    if os.path.exists(path):
        try:  # a garbled file is "another config": refused, or replaced with --resume
            with open(path, encoding="utf-8", errors="replace") as f:
                previous = f.read()
        except OSError as e:
            raise ConfigError(f"cannot read {path} ({e.strerror}); use --resume to continue "
                              f"with this config, or another --workdir") from None
        if previous == config_text:
            state = "same"
        elif resume:
            state = "resumed"
        elif workdir_lib.has_progress(workdir):
            raise ConfigError(f"workdir {workdir} holds a run with another config ({path}); "
                              "use --resume to continue it anyway, --overwrite to start afresh, "
                              "or another --workdir")
        # else: the config of a start that failed before any progress; replaced
    workdir_lib.mark(workdir)
    with workdir_lib.atomic_write(path) as f:
        f.write(config_text)
    return state


def train(workdir, resume=False, overwrite=False, export=True, overwrite_foreign=False):
    """Build the Experiment of the parsed gin config and check it (data, network) before
    anything is written; then lock and prepare `workdir` (the chief only: other workers of a
    multi-worker strategy work in a private copy), run it and export the ticket.
    Returns (experiment, round results)."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: --resume continues "
                          "the run in the workdir, --overwrite deletes it; give one of them")
    if overwrite_foreign and not overwrite:
        raise ConfigError("--overwrite_foreign confirms what --overwrite deletes; give both")
    experiment = build_experiment(workdir)  # first: the strategy says who the chief is
    experiment.validate()
    if not experiment.is_chief:
        return experiment, run_experiment(experiment, "worker", export=export)
    existed = os.path.isdir(workdir)
    lock = workdir_lib.WorkdirLock(workdir)
    try:
        lock.acquire()
    except OSError as e:
        raise ConfigError(f"cannot write to workdir {workdir}: {e.strerror}") from None
    try:
        if lock.took_over:
            print(lock.describe_take_over(), flush=True)
        try:
            state = prepare_workdir(workdir, requested_config(), resume, overwrite,
                                    overwrite_foreign)
        except OSError as e:
            raise ConfigError(f"cannot write to workdir {workdir}: {e.strerror}") from None
        for path in workdir_lib.clean_temporary(workdir):
            print(f"[tf_lottery] removed {path}, left by an interrupted write", flush=True)
        try:
            return experiment, run_experiment(experiment, state, export=export)
        except BaseException:
            _forget_failed_start(workdir, existed)
            raise
    finally:
        lock.release()


def _forget_failed_start(workdir, existed):
    """After a run that failed before any progress: remove what this start wrote (config.gin,
    the marker; the folder when this start created it), so the corrected command starts anew."""
    if workdir_lib.has_progress(workdir):
        return
    for name in (CONFIG_FILE, workdir_lib.MARKER_FILE):
        with contextlib.suppress(OSError):
            os.remove(os.path.join(workdir, name))
    if not existed:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(workdir, workdir_lib.LOCK_FILE))
            os.rmdir(workdir)


def build_experiment(workdir):
    """Experiment(workdir) of the parsed gin config; a missing or wrong binding is one
    ConfigError naming it."""
    try:
        return Experiment(workdir=workdir)
    except TfLotteryError:
        raise
    except (TypeError, ValueError, KeyError, RuntimeError) as e:  # gin re-raises these
        raise ConfigError(explain_construction_error(e)) from None


def tensorboard_command(logdir):
    """A command line that starts TensorBoard on `logdir` as printed: the `tensorboard` script
    next to this Python (.venv/bin/tensorboard, which a bare `tensorboard` is not unless the
    virtualenv is activated), relative to the working directory when it lies below it, else
    `python -m tensorboard.main`."""
    script = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    if not os.access(script, os.X_OK):
        return f"{shlex.quote(sys.executable)} -m tensorboard.main --logdir {shlex.quote(logdir)}"
    relative = os.path.relpath(script)
    shown = relative if not relative.startswith(os.pardir) else script
    return f"{shlex.quote(shown)} --logdir {shlex.quote(logdir)}"


def run_experiment(experiment, state, export=True):
    workdir = experiment.workdir
    how = {"new": "new run", "worker": f"private copy of a worker, the chief writes "
                                       f"{experiment.chief_workdir}"}.get(state, "continuing")
    print(f"[tf_lottery] workdir: {workdir} ({how})")
    print(f"[tf_lottery] TensorBoard: {tensorboard_command(os.path.join(workdir, 'tensorboard'))}")
    results = experiment.run()
    with workdir_lib.atomic_write(os.path.join(workdir, "operative_config.gin")) as f:
        f.write(gin.operative_config_str())
    if results:
        last = results[-1]
        print(f"[tf_lottery] final ticket: remaining {last['remaining_fraction']:.4f} of "
              f"{last['total_weights']} weights, test accuracy {last['test_accuracy']:.4f}")
    if export and results:
        from tf_lottery.export.sizes import human_bytes

        paths = experiment.export()
        size = {name: f"{human_bytes(entry['bytes'])}, {human_bytes(entry['gzip_bytes'])} gzip'd"
                for name, entry in paths["sizes"].items()}
        print(f"[tf_lottery] exported ticket: {paths['saved_model']} (SavedModel, masks folded; "
              f"{size['saved_model']}) and {paths['ticket']} (ticket file; {size['ticket']})")
    return results
