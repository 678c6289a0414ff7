"""A small IMP run for the resume test, run as a subprocess:

    python -m tests.search.imp_resume_run WORKDIR LOG [KILL_ROUND KILL_EPOCH]

Appends 'round epoch' to LOG at the start of every epoch it trains; with KILL_ROUND/KILL_EPOCH it
SIGKILLs itself after the first step of that epoch of that round (mid-round, after the epoch
checkpoint before it)."""
import os
import signal
import sys

import keras

from tests.search.mlp import mlp, small_dataset
from tf_lottery.experiment import Experiment
from tf_lottery.search.imp import IMPSearch
from tf_lottery.training.recipe import TrainingRecipe


def make_search():
    recipe = TrainingRecipe(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4,
                            epochs=3, lr_schedule="cosine", jit_compile=False)
    return IMPSearch(prune_fraction=0.5, num_rounds=3, rewind_to="1ep", recipe=recipe)


def run(workdir, log=None, kill_at=None):
    search = make_search()
    callbacks = search.round_callbacks

    def round_callbacks(model, index, experiment):
        def epoch_begin(epoch, logs):
            if log:
                with open(log, "a") as f:
                    f.write(f"{index} {epoch}\n")

        def batch_end(batch, logs):
            if kill_at == (index, current[0]) and batch == 0:
                os.kill(os.getpid(), signal.SIGKILL)

        current = [None]
        tracker = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: (current.__setitem__(0, epoch),
                                                epoch_begin(epoch, logs)),
            on_train_batch_end=batch_end)
        return [*callbacks(model, index, experiment), tracker]

    search.round_callbacks = round_callbacks
    experiment = Experiment(workdir=workdir, search=search, model_fn=mlp,
                            dataset=small_dataset(), verbose=0, tensorboard=False)
    return experiment.run()


if __name__ == "__main__":
    workdir, log, *kill = sys.argv[1:]
    run(workdir, log, tuple(int(k) for k in kill) if kill else None)
