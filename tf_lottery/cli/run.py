"""Run the gin-configured Experiment in a prepared workdir, then export its final ticket."""
import os

import gin

from tf_lottery.experiment import Experiment


def run_experiment(workdir, state, export=True):
    experiment = Experiment(workdir=workdir)
    print(f"[tf_lottery] workdir: {workdir} ({'continuing' if state != 'new' else 'new run'})")
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
