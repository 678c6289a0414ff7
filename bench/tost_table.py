"""ToST's Table 2 on real Fashion-MNIST: random, SNIP and IMP (lottery-ticket) masks of a small conv
net at 90/95/98% sparsity, each trained with and without ToST, test accuracy mean ± std over
seeds, printed as a markdown table shaped like the paper's.

    python bench/tost_table.py          # all 60,000 examples, 8 epochs, 3 seeds: hours on 2 cores
    python bench/tost_table.py --train-examples 15000 --epochs 5   # about half an hour
    python bench/tost_table.py --quick  # a smoke run: 2,048 examples, 2 epochs (minutes)

A benchmark, not a test. "ToST" is the toolkit's default combination (Jaiswal et al. 2022, §3):
ghost skips + ghost Swish neurons (faded step by step, gone at the first learning-rate decay),
LRsI and label smoothing 0.1; "without" is the same recipe with every tweak off. The recipe is
the paper's (SGD, momentum 0.9, weight decay 2e-4, batch 128, learning rate x0.1 at 1/2 and 3/4
of training) over fewer epochs, but from learning rate 0.01 (--learning-rate): the paper's 0.1
suits ResNets with a pooled classifier; this conv net's flattened 1568-input head diverges early
with it (the dense net reaches 15-30% test accuracy in the 2 quick epochs, 75% with 0.01).

Every mask of a seed starts from the same initialisation θ0 of that seed: random (layer-wise
uniform) and SNIP (global, one batch) are computed at θ0 by ToSTTraining; the IMP masks come
from a plain loop here (so that the tickets land exactly on these sparsities): train from θ0,
prune the smallest-magnitude weights of each layer (pruning.magnitude_masks, layer-wise as
Frankle & Carbin prune conv nets; ranked globally after the quick run's 32 steps, the classifier
kept 0.1% of its weights at 90% sparsity) to the next sparsity of the schedule, rewind to θ0,
repeat; the masks
at 90/95/98% are saved as ticket files (weights θ0) and trained with mask_source='ticket'.
Runs live under --workdir: a rerun skips what is done.
"""
import argparse
import functools
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gin  # noqa: E402
import keras  # noqa: E402

from tf_lottery import masks as masks_lib  # noqa: E402
from tf_lottery.data import load_dataset  # noqa: E402
from tf_lottery.experiment import Experiment  # noqa: E402
from tf_lottery.export import save_ticket  # noqa: E402
from tf_lottery.layers.initializers import weight_initializer  # noqa: E402
from tf_lottery.layers.mask_rules import FixedMask  # noqa: E402
from tf_lottery.models import build_model  # noqa: E402
from tf_lottery.pruning import magnitude_masks  # noqa: E402
from tf_lottery.search.tost import ToSTTraining  # noqa: E402
from tf_lottery.training.recipe import TrainingRecipe  # noqa: E402
from tf_lottery.training.sparse_model import SparseModel  # noqa: E402

SPARSITIES = (0.9, 0.95, 0.98)
MASKS = (("random", "Random Pruning"), ("snip", "SNIP"), ("imp", "LTH (IMP)"))
WEIGHT_INIT = "kaiming_normal"  # ToSTTraining's default: the same θ0 in the IMP loop
model_fn = functools.partial(build_model, "conv4", plan=[16, 16, "pool", 32, 32, "pool"],
                             dense_units=[], batch_norm=True)


def recipe(epochs, learning_rate, label_smoothing=0.0):
    drops = sorted({max(1, epochs // 2), max(1, (3 * epochs) // 4)})
    return TrainingRecipe(optimizer="sgd", learning_rate=learning_rate, momentum=0.9,
                          weight_decay=2e-4, epochs=epochs, lr_schedule="step",
                          lr_drop_epochs=drops, label_smoothing=label_smoothing)


def imp_schedule(quick):
    """Sparsities IMP passes through: each round prunes from the last one to the next."""
    return list(SPARSITIES) if quick else [0.5, 0.75, *SPARSITIES]


def imp_tickets(seed, dataset, plain, schedule, directory):
    """IMP with rewinding to θ0: {sparsity: ticket file}, and the dense network's accuracy."""
    paths = {s: os.path.join(directory, f"imp_{round(s * 100)}.npz") for s in SPARSITIES}
    summary = os.path.join(directory, "imp.json")
    if os.path.exists(summary):
        with open(summary) as f:
            return paths, json.load(f)["dense_test_accuracy"]
    os.makedirs(directory, exist_ok=True)
    keras.utils.set_random_seed(seed)
    info = dataset.info
    network = model_fn(input_shape=info.input_shape, num_classes=info.num_classes,
                       mask_rule=FixedMask(),
                       kernel_initializer=weight_initializer(WEIGHT_INIT, seed=seed))
    model = SparseModel(network)
    model(next(iter(dataset.test))[0][:1])
    theta0 = os.path.join(directory, "theta0.weights.h5")
    network.save_weights(theta0)
    sparsity, dense_accuracy = 0.0, None
    for target in schedule:
        model.compile(optimizer=plain.make_optimizer(dataset.steps_per_epoch),
                      loss=plain.make_loss(), metrics=["accuracy"])
        model.fit(dataset.train_batches(0), epochs=plain.epochs,
                  steps_per_epoch=dataset.steps_per_epoch, verbose=0)
        if dense_accuracy is None:
            dense_accuracy = model.evaluate(dataset.test, verbose=0, return_dict=True)["accuracy"]
        masks = magnitude_masks(network, 1 - (1 - target) / (1 - sparsity), scope="layerwise")
        network.load_weights(theta0)  # rewind (all masks ones again), then the new mask
        masks_lib.set_masks(network, masks)
        sparsity = target
        if target in paths:
            save_ticket(network, paths[target], metadata={"algorithm": "imp", "seed": seed})
    with open(summary, "w") as f:
        json.dump({"dense_test_accuracy": dense_accuracy}, f)
    return paths, dense_accuracy


def train_masks(source, tost, seed, dataset, epochs, learning_rate, tickets, directory):
    """Test accuracy at each of SPARSITIES: one ToSTTraining round per mask."""
    tweaks = dict(ghost_skips=tost, ghost_activation="swish" if tost else None, lrsi=tost,
                  ghost_schedule_per_batch=True)
    if source == "imp":
        masks = dict(mask_source="ticket", ticket_path=[tickets[s] for s in SPARSITIES])
    else:
        masks = dict(mask_source="criterion", criterion=source, prune_fraction=list(SPARSITIES))
    search = ToSTTraining(recipe=recipe(epochs, learning_rate, 0.1 if tost else 0.0),
                          weight_init=WEIGHT_INIT, **masks, **tweaks)
    experiment = Experiment(workdir=directory, search=search, model_fn=model_fn, seed=seed,
                            dataset=dataset, verbose=0, tensorboard=False)
    return [r["test_accuracy"] for r in experiment.run()]


def cell(values):
    values = 100 * np.asarray(values, dtype=float)
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.2f}±{std:.2f}"


def table(dense, results, seeds):
    lines = ["| Sparse mask | " + " | ".join(f"{round(s * 100)}%" for s in SPARSITIES) + " |",
             "|---|" + "---|" * len(SPARSITIES),
             f"| Conv net [No Pruning] | {cell(dense)} |" + " - |" * (len(SPARSITIES) - 1)]
    for source, label in MASKS:
        for tost in (False, True):
            runs = np.array([results[(source, tost, seed)] for seed in seeds])  # seeds x sparsity
            name = f"{label} + ToST" if tost else label
            lines.append(f"| {name} | " + " | ".join(cell(runs[:, i])
                                                     for i in range(len(SPARSITIES))) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2,048 training examples, 2 epochs, 20 LRsI iterations")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="default 8 (quick: 2)")
    parser.add_argument("--learning-rate", type=float, default=0.01,
                        help="initial learning rate (the paper's 0.1 suits ResNets with a pooled "
                             "classifier; with this conv net's flattened head it diverges early)")
    parser.add_argument("--train-examples", type=int, default=None,
                        help="train on the first N training examples (default all 60,000)")
    parser.add_argument("--workdir", default=None, help="default: a new temporary directory")
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 8)
    workdir = args.workdir or tempfile.mkdtemp(prefix="tost_table_")
    if args.quick:
        gin.bind_parameter("layerwise_rescaled_init.iterations", 20)
        dataset = load_dataset(batch_size=128, train_examples=2048, test_examples=1000)
    else:
        dataset = load_dataset(batch_size=128, train_examples=args.train_examples)
    seeds = list(range(args.seeds))
    print(f"Fashion-MNIST: {dataset.info.num_train_examples} training / "
          f"{dataset.info.num_test_examples} test examples, {epochs} epochs, learning rate "
          f"{args.learning_rate}, seeds {seeds}, workdir {workdir}", flush=True)
    start, dense, results = time.time(), [], {}
    for seed in seeds:
        seed_dir = os.path.join(workdir, f"seed{seed}")
        tickets, accuracy = imp_tickets(seed, dataset, recipe(epochs, args.learning_rate),
                                        imp_schedule(args.quick), os.path.join(seed_dir, "imp"))
        dense.append(accuracy)
        for source, _ in MASKS:
            for tost in (False, True):
                name = f"{source}_{'tost' if tost else 'plain'}"
                results[(source, tost, seed)] = train_masks(
                    source, tost, seed, dataset, epochs, args.learning_rate, tickets,
                    os.path.join(seed_dir, name))
                print(f"seed {seed} {name}: "
                      + ", ".join(f"{a:.4f}" for a in results[(source, tost, seed)])
                      + f" ({time.time() - start:.0f} s)", flush=True)
    print()
    print(table(dense, results, seeds))
    print(f"\nTest accuracy (%), mean ± std over {len(seeds)} seeds; {time.time() - start:.0f} s.")


if __name__ == "__main__":
    main()
