"""Benchmark: sparse networks at the same sparsity and the same training budget on real
Fashion-MNIST — gradual magnitude pruning (GMP), dynamic sparse training (static, SET, RigL),
IMP's ticket, and the dense network.

Every method ends with LeNet-300-100 trained for the same number of epochs (`--epochs`, default
10) with the same recipe (Adam, constant learning rate, batch 128), at exactly the target
sparsity of the pruned layers (fc1 and fc2; the 1,000-weight output layer is left dense and not
counted, the convention of the CS vs IMP benchmark, so the CS rows of docs/RESULTS.md compare):

* dense: the unpruned network;
* gmp: Zhu & Gupta's cubic schedule (tfmot's PolynomialDecay) from 0 to the target between the
  end of epoch 1 and 75% of training, masks updated every 100 steps, every layer at the target
  (tfmot's default distribution); the network trains while it is pruned;
* imp: IMP's ticket, retrained from w_0 for the same epochs. The search prunes 20% of the
  remaining weights (global magnitude) per round with `--imp_round_epochs`-epoch rounds and
  rewinding to w_0; for each target, the last round not yet at the target is pruned further by
  global magnitude to exactly the target (IMP with a smaller last step), and that ticket is
  retrained. Its search cost is reported apart;
* cs: continuous sparsification (Savarese et al. 2020) at its own sparsity, which λ sets, not a
  target: one search round of `--imp_round_epochs` epochs per λ in `--cs_l1_penalties`
  (s_0 = 0, β 1 → 100, the CS vs IMP benchmark's settings), its ticket b(s) = 1[s > 0]
  retrained from w_0 for the same epochs as every other network;
* static_erk / static_uniform / set / rigl (when tf_lottery.search.dynamic_sparse exists):
  sparse from the first step at the target, ERK or uniform layer densities, ΔT = 100 steps,
  ζ = 0.3 cosine-decayed, no updates after 75% of training (the RigL paper's settings).

    python bench/sparse_training.py                 # 3 seeds, 80/90/95%
    python bench/sparse_training.py --quick         # tiny data, 1 seed: a smoke run
    python bench/sparse_training.py --methods gmp imp dense --sparsities 0.8 0.9 0.95

Prints one markdown table of test accuracy (mean ± std over seeds) per method and sparsity.
"""
import argparse
import functools
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cs_vs_imp import dense_reference, init_rewind_point, mean_std  # noqa: E402
from tf_lottery.data import load_dataset  # noqa: E402
from tf_lottery.data.datasets import DEBIAN_FASHION_MNIST_DIR  # noqa: E402
from tf_lottery.experiment import Experiment  # noqa: E402
from tf_lottery.layers.mask_rules import FixedMask  # noqa: E402
from tf_lottery.masks import get_masks  # noqa: E402
from tf_lottery.models import build_model  # noqa: E402
from tf_lottery.search import rounds  # noqa: E402
from tf_lottery.search.continuous_sparsification import ContinuousSparsificationSearch  # noqa: E402,E501
from tf_lottery.search.gmp import GradualMagnitudeSearch  # noqa: E402
from tf_lottery.search.imp import IMPSearch  # noqa: E402
from tf_lottery.search.ticket_evaluation import retrain_ticket  # noqa: E402
from tf_lottery.sparsity.magnitude import global_magnitude_masks  # noqa: E402
from tf_lottery.training.recipe import TrainingRecipe  # noqa: E402

MODEL = "lenet_300_100"
EXCLUDE = ("output",)
DST_METHODS = ("static_erk", "static_uniform", "set", "rigl")
METHODS = ("dense", "gmp", "imp", "cs") + DST_METHODS


def make_recipe(args, epochs):
    return TrainingRecipe(optimizer="adam", learning_rate=args.learning_rate, weight_decay=0.0,
                          epochs=epochs, lr_schedule="constant")


def run_search(workdir, search, dataset, seed):
    experiment = Experiment(workdir=workdir, search=search,
                            model_fn=functools.partial(build_model, MODEL), dataset=dataset,
                            seed=seed, verbose=0, tensorboard=False)
    return experiment, experiment.run()


def gmp(args, workdir, dataset, seed, sparsity):
    steps, begin = args.epochs * dataset.steps_per_epoch, dataset.steps_per_epoch
    frequency = min(100, max(1, begin // 4))
    # the last update falls on end_step (tfmot prunes only at begin + k·frequency)
    end = begin + frequency * ((int(0.75 * steps) - begin) // frequency)
    search = GradualMagnitudeSearch(
        final_sparsity=sparsity, initial_sparsity=0.0, begin_step=begin,
        end_step=end, frequency=frequency,
        distribution="uniform", recipe=make_recipe(args, args.epochs), exclude=EXCLUDE)
    _, results = run_search(workdir, search, dataset, seed)
    return {"accuracy": results[-1]["test_accuracy"], "sparsity": results[-1]["sparsity"]}


def dst(method, args, workdir, dataset, seed, sparsity):
    from tf_lottery.search.dynamic_sparse import DynamicSparseSearch

    updater, _, distribution = method.partition("_")
    search = DynamicSparseSearch(
        updater="static" if updater == "static" else updater, sparsity=sparsity,
        distribution=distribution or "erk", update_interval=min(100, max(1, dataset.steps_per_epoch // 4)),
        drop_fraction=0.3, drop_fraction_decay="cosine", end_updates=0.75,
        recipe=make_recipe(args, args.epochs), exclude=EXCLUDE)
    _, results = run_search(workdir, search, dataset, seed)
    return {"accuracy": results[-1]["test_accuracy"], "sparsity": results[-1]["sparsity"]}


def exact_target_masks(experiment, index, sparsity):
    """Round `index`'s trained weights pruned by global magnitude (its pruned weights score 0)
    to exactly `sparsity` over the layers IMP prunes."""
    network = experiment.build_network(mask_rule=FixedMask())
    network(next(iter(experiment.dataset.test))[0][:1])
    network.load_weights(rounds.round_weights_path(experiment.workdir, index))
    masks = rounds.load_round_masks(experiment.workdir, index)
    layers = {layer.name: layer for layer in network._flatten_layers() if layer.name in masks}
    names = [name for name in masks if name not in EXCLUDE]
    weights = [tf.constant(layers[n].raw_kernel.numpy() * masks[n]) for n in names]
    new = global_magnitude_masks(weights, sparsity)
    return {**masks, **{n: m.numpy().astype(np.float32) for n, m in zip(names, new)}}


def imp(args, root, dataset, seed, targets, cache):
    """{target: row} for every target from one IMP search per seed (cached)."""
    if seed in cache:
        return cache[seed]
    # 0.8^r <= 1 - max target: the rounds to pass every target, round 0 dense
    num_rounds = 1
    while 0.8 ** (num_rounds - 1) > 1 - max(targets) + 1e-12:
        num_rounds += 1
    search = IMPSearch(prune_fraction=0.2, num_rounds=num_rounds, rewind_to="init",
                       recipe=make_recipe(args, args.imp_round_epochs), exclude=EXCLUDE)
    experiment, results = run_search(os.path.join(root, f"imp_seed{seed}"), search, dataset,
                                     seed)
    rows = {}
    for target in targets:
        below = [r for r in results if r["sparsity"] <= target + 1e-9]
        index = below[-1]["round"]
        masks = exact_target_masks(experiment, index, target)
        directory = os.path.join(rounds.round_dir(experiment.workdir, index),
                                 f"bench_retrain_{target:g}")
        metrics = retrain_ticket(experiment, masks, init_rewind_point(experiment), directory,
                                 make_recipe(args, args.epochs))
        pruned = [m for n, m in masks.items() if n not in EXCLUDE]
        reached = 1 - sum(m.sum() for m in pruned) / sum(m.size for m in pruned)
        rows[target] = {"accuracy": metrics["retrained_test_accuracy"], "sparsity": reached,
                        "search_epochs": (index + 1) * args.imp_round_epochs}
    cache[seed] = rows
    return rows


def cs(args, workdir, dataset, seed, l1_penalty):
    """One CS search round at `l1_penalty`; its ticket retrained from w_0 (module doc)."""
    search = ContinuousSparsificationSearch(
        num_rounds=1, recipe=make_recipe(args, args.imp_round_epochs), l1_penalty=l1_penalty,
        initial_score=0.0, rewind_to="init", exclude=EXCLUDE, evaluate_tickets=False)
    experiment, results = run_search(workdir, search, dataset, seed)
    masks = rounds.load_round_masks(experiment.workdir, 0)
    metrics = retrain_ticket(experiment, masks, init_rewind_point(experiment),
                             os.path.join(workdir, "bench_retrain"),
                             make_recipe(args, args.epochs))
    return {"accuracy": metrics["retrained_test_accuracy"], "sparsity": results[-1]["sparsity"]}


def table(results, methods, targets, notes):
    lines = ["| method | sparsity | seeds | sparsity reached | test accuracy |",
             "|---|---|---|---|---|"]
    for method in methods:
        for target in ([0.0] if method == "dense" or method.startswith("cs") else targets):
            found = results.get((method, target), [])
            if method.startswith("cs"):  # no target: λ sets the sparsity
                lines.append(f"| {method} | – | {len(found)} | "
                             f"{mean_std([r['sparsity'] for r in found], '.4f')} | "
                             f"{mean_std([r['accuracy'] for r in found], '.4f')} |")
                continue
            lines.append(f"| {method} | {target:.0%} | {len(found)} | "
                         f"{mean_std([r['sparsity'] for r in found], '.4f')} | "
                         f"{mean_std([r['accuracy'] for r in found], '.4f')} |")
    return "\n".join(lines + [""] + [f"- {note}" for note in notes])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 seed, 2 epochs")
    parser.add_argument("--seeds", type=int, default=None, help="default 3 (--quick: 1)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    parser.add_argument("--epochs", type=int, default=None, help="training budget (default 10)")
    parser.add_argument("--imp_round_epochs", type=int, default=None,
                        help="epochs of each IMP search round (default 3)")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--cs_l1_penalties", type=float, nargs="+", default=[1e-6, 3e-6, 1e-5],
                        help="one CS row per λ")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                        help="default: all (the DST ones when the module exists)")
    parser.add_argument("--workdir", default=None, help="kept for inspection; default: a temp dir")
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (2 if args.quick else 10)
    args.imp_round_epochs = args.imp_round_epochs or (1 if args.quick else 3)
    args.seeds = args.seeds or (1 if args.quick else 3)
    if args.methods is None:
        try:
            import tf_lottery.search.dynamic_sparse  # noqa: F401

            args.methods = list(METHODS)
        except ImportError:
            args.methods = [m for m in METHODS if m not in DST_METHODS]
    return args


def main(argv=None):
    args = parse_args(argv)
    if not os.path.exists(os.path.join(DEBIAN_FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")):
        print(f"real Fashion-MNIST is needed in {DEBIAN_FASHION_MNIST_DIR} "
              "(apt-get install dataset-fashion-mnist)", file=sys.stderr)
        return 1
    root = args.workdir or tempfile.mkdtemp(prefix="sparse_training_")
    size = dict(train_examples=2048, test_examples=1000) if args.quick else {}
    results, imp_cache, search_epochs = {}, {}, []
    start = time.time()
    for seed in range(args.seeds):
        dataset = load_dataset("fashion_mnist", source="local", batch_size=args.batch_size,
                               seed=seed, **size)
        for method in args.methods:
            if method == "cs":
                for l1_penalty in args.cs_l1_penalties:
                    label = f"cs λ={l1_penalty:g}"
                    row = cs(args, os.path.join(root, f"cs_{l1_penalty:g}_seed{seed}"), dataset,
                             seed, l1_penalty)
                    results.setdefault((label, 0.0), []).append(row)
                    print(f"seed {seed} {label}: sparsity {row['sparsity']:.4f}, test accuracy "
                          f"{row['accuracy']:.4f}", flush=True)
                continue
            for target in ([0.0] if method == "dense" else args.sparsities):
                began = time.time()
                workdir = os.path.join(root, f"{method}_{target:g}_seed{seed}")
                if method == "dense":
                    accuracy = dense_reference(workdir, dataset, seed,
                                               make_recipe(args, args.epochs))
                    row = {"accuracy": accuracy, "sparsity": 0.0}
                elif method == "gmp":
                    row = gmp(args, workdir, dataset, seed, target)
                elif method == "imp":
                    row = imp(args, root, dataset, seed, args.sparsities, imp_cache)[target]
                    search_epochs.append(row["search_epochs"])
                else:
                    row = dst(method, args, workdir, dataset, seed, target)
                results.setdefault((method, target), []).append(row)
                print(f"seed {seed} {method} {target:.0%}: sparsity {row['sparsity']:.4f}, "
                      f"test accuracy {row['accuracy']:.4f} ({time.time() - began:.0f} s)",
                      flush=True)
    notes = [f"LeNet-300-100 on Fashion-MNIST{' (quick: 2048/1000 examples)' if args.quick else ''}"
             f", Adam {args.learning_rate:g} constant, batch {args.batch_size}, every network "
             f"trained {args.epochs} epochs; output layer dense and not counted",
             "gmp: cubic schedule 0 → target from epoch 1 to 75% of training, every 100 steps, "
             "uniform layer sparsity",
             f"imp: ticket retrained {args.epochs} epochs from w_0; search rounds of "
             f"{args.imp_round_epochs} epoch(s) pruning 20% (global), the last pruned to the exact "
             f"target; search epochs before retraining: {sorted(set(search_epochs))}",
             f"cs: one {args.imp_round_epochs}-epoch search round per λ, s_0 = 0, β 1 → 100, "
             f"ticket b(s) = 1[s > 0] retrained {args.epochs} epochs from w_0",
             "static/set/rigl: ΔT = 100 steps, ζ = 0.3 cosine, updates until 75% of training",
             f"{args.seeds} seed(s), {time.time() - start:.0f} s in all; runs in {root}"]
    print()
    rows = [m for m in args.methods if m != "cs"]
    if "cs" in args.methods:
        rows += [f"cs λ={l1_penalty:g}" for l1_penalty in args.cs_l1_penalties]
    print(table(results, rows, args.sparsities, notes))
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
