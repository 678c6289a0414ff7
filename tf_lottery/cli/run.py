"""Run the gin-configured Experiment in its workdir, then export its final ticket (bin/train)."""
import os
import shutil

import gin

from tf_lottery.config import requested_config
from tf_lottery.errors import ConfigError
from tf_lottery.experiment import Experiment

CONFIG_FILE = "config.gin"


def prepare_workdir(workdir, config_text, resume, overwrite):
    """Create or check the workdir; returns 'new', 'same' or 'resumed'."""
    path = os.path.join(workdir, CONFIG_FILE)
    if overwrite and os.path.exists(workdir):
        shutil.rmtree(workdir)
    state = "new"
    if os.path.exists(path):
        with open(path) as f:
            previous = f.read()
        if previous != config_text and not resume:
            raise ConfigError(f"workdir {workdir} holds a run with another config ({path}); "
                              "use --resume to continue it anyway, --overwrite to start afresh, "
                              "or another --workdir")
        state = "same" if previous == config_text else "resumed"
    try:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            f.write(config_text)
    except OSError as e:
        raise ConfigError(f"cannot write to workdir {workdir}: {e.strerror}") from None
    return state


def train(workdir, resume=False, overwrite=False, export=True):
    """Build the Experiment of the parsed gin config, prepare `workdir` (the chief only: other
    workers of a multi-worker strategy work in a private copy), run it and export the ticket.
    Returns (experiment, round results)."""
    experiment = Experiment(workdir=workdir)  # first: the strategy says who the chief is
    if experiment.is_chief:
        state = prepare_workdir(workdir, requested_config(), resume, overwrite)
    else:
        state = "worker"
    return experiment, run_experiment(experiment, state, export=export)


def run_experiment(experiment, state, export=True):
    workdir = experiment.workdir
    how = {"new": "new run", "worker": f"private copy of a worker, the chief writes "
                                       f"{experiment.chief_workdir}"}.get(state, "continuing")
    print(f"[tf_lottery] workdir: {workdir} ({how})")
    print(f"[tf_lottery] TensorBoard: tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")
    results = experiment.run()
    with open(os.path.join(workdir, "operative_config.gin"), "w") as f:
        f.write(gin.operative_config_str())
    if results:
        last = results[-1]
        print(f"[tf_lottery] final ticket: remaining {last['remaining_fraction']:.4f} of "
              f"{last['total_weights']} weights, test accuracy {last['test_accuracy']:.4f}")
    if export and results:
        paths = experiment.export()
        print(f"[tf_lottery] exported ticket: {paths['saved_model']} (SavedModel, masks folded) "
              f"and {paths['ticket']} (ticket file)")
    return results
