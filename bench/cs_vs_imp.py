"""Benchmark: Continuous Sparsification vs Iterative Magnitude Pruning on real Fashion-MNIST.

For each seed, each method searches LeNet-300-100 round by round until its ticket is at least as
sparse as every target (80% and 95% by default); for each target, the first round that reaches
it gives the search cost (epochs of search training so far) and its ticket, which is retrained
from the initialisation with the same recipe (ticket_evaluation.retrain_ticket: the same footing
for both methods). The dense network retrained the same way is the reference. Prints a markdown
table of mean ± std over the seeds.

    python bench/cs_vs_imp.py            # 3 seeds, full data (tens of minutes on a CPU)
    python bench/cs_vs_imp.py --quick    # tiny data, 1 seed: a smoke run of a minute or two
    python bench/cs_vs_imp.py --s0 -0.01 0 0.01 0.03   # one CS row per s_0, one IMP and dense

--methods CS runs CS alone (e.g. another λ against an IMP table already measured).

CS's initial score s_0 is the paper's knob for the tickets' sparsity (Savarese et al., Sec. 4.1:
"varying the mask initialization s_0 between -0.03 and 0.03"; Sec. 4.2 likewise): `--s0` takes
a list and runs CS once per value (its own rows), against one IMP run and one dense reference
per seed. At s_0 = 0 the ticket b(s) = 1[s > 0] starts empty (b(0) = 0: pruned, as in the
authors' code; the soft mask σ(β·0) is 1/2) and keeps a weight only once training has raised
its score above 0 (SigmoidScores).

What is left dense. The paper states it for its ResNet comparison only (Sec. 4.2: "The two
skip-connections that perform 1×1 convolutions and the output layer are not sparsified: for IMP,
their parameters are not pruned, while for CS their weights do not have a correspondent mask m
nor mask parameters s"); it has no LeNet-300-100 setting, and Sec. 4.1 (Conv-6) does not say.
This benchmark follows the Sec. 4.2 convention, which for LeNet-300-100 (no shortcuts) is the
output layer: `--exclude output` (the default) keeps it dense for both methods, IMP never prunes
it and CS gives it no s, as gin_configs/cs.gin does; sparsities count fc1 and fc2 only (the
output layer is 1,000 of the 266,200 weights). `--exclude` with no name prunes every layer.
"""
import argparse
import functools
import math
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tf_lottery.data import load_dataset  # noqa: E402
from tf_lottery.data.datasets import DEBIAN_FASHION_MNIST_DIR  # noqa: E402
from tf_lottery.experiment import Experiment  # noqa: E402
from tf_lottery.layers.mask_rules import FixedMask  # noqa: E402
from tf_lottery.masks import get_masks  # noqa: E402
from tf_lottery.models import build_model  # noqa: E402
from tf_lottery.search import rounds  # noqa: E402
from tf_lottery.search.continuous_sparsification import ContinuousSparsificationSearch  # noqa: E402
from tf_lottery.search.imp import IMPSearch  # noqa: E402
from tf_lottery.search.rewind import INIT, rewind_path, save_dense_weights  # noqa: E402
from tf_lottery.search.ticket_evaluation import retrain_ticket  # noqa: E402
from tf_lottery.training.recipe import TrainingRecipe  # noqa: E402

MODEL = "lenet_300_100"


def make_recipe(args):
    return TrainingRecipe(optimizer="adam", learning_rate=args.learning_rate, weight_decay=0.0,
                          epochs=args.epochs, lr_schedule="constant")


def make_experiment(workdir, search, dataset, seed):
    return Experiment(workdir=workdir, search=search,
                      model_fn=functools.partial(build_model, MODEL), dataset=dataset, seed=seed,
                      verbose=0, tensorboard=False)


def search_until(make_search, workdir, dataset, seed, targets, max_rounds):
    """Run rounds one at a time (each run resumes the last) until every target sparsity is
    reached or max_rounds; returns (experiment, round metrics)."""
    results = []
    for num_rounds in range(1, max_rounds + 1):
        experiment = make_experiment(workdir, make_search(num_rounds), dataset, seed)
        results = experiment.run()
        if results[-1]["sparsity"] >= max(targets) - 1e-9:
            break
    return experiment, results


def init_rewind_point(experiment):
    """workdir/init/rewind_init.npz; derived from init/weights.weights.h5 (a FixedMask network)
    for a search that does not write it."""
    path = rewind_path(experiment.workdir, INIT)
    if not os.path.exists(path):
        network = experiment.build_network(mask_rule=FixedMask())
        network(next(iter(experiment.dataset.test))[0][:1])
        network.load_weights(os.path.join(rounds.init_dir(experiment.workdir),
                                          rounds.WEIGHTS_FILE))
        save_dense_weights(path, network)
    return path


def cs_label(s0):
    return f"CS s_0={s0:g}"


def evaluate_targets(method, experiment, results, targets, recipe):
    """{target: row} for the first round of `results` reaching each target."""
    rows = {}
    for target in targets:
        hit = next((r for r in results if r["sparsity"] >= target - 1e-9), None)
        if hit is None:
            rows[target] = None
            continue
        index = hit["round"]
        masks = rounds.load_round_masks(experiment.workdir, index)
        directory = os.path.join(rounds.round_dir(experiment.workdir, index), "bench_retrain")
        metrics = retrain_ticket(experiment, masks, init_rewind_point(experiment), directory,
                                 recipe)
        rows[target] = {"sparsity": hit["sparsity"], "search_epochs": hit["search_epochs"],
                        "rounds": index + 1,
                        "retrained_test_accuracy": metrics["retrained_test_accuracy"]}
        print(f"  {method} target {target:.0%}: round {index + 1}, sparsity "
              f"{hit['sparsity']:.4f}, {hit['search_epochs']} search epochs, retrained accuracy "
              f"{metrics['retrained_test_accuracy']:.4f}", flush=True)
    return rows


def dense_reference(workdir, dataset, seed, recipe):
    """The unpruned network retrained from its initialisation with the same recipe."""
    experiment = make_experiment(workdir, None, dataset, seed)
    keras.utils.set_random_seed(seed)  # as Experiment.run does before a search builds
    network = experiment.build_network(mask_rule=FixedMask())
    network(next(iter(dataset.test))[0][:1])
    path = rewind_path(workdir, INIT)
    save_dense_weights(path, network)
    ones = {name: np.ones_like(mask) for name, mask in get_masks(network).items()}
    metrics = retrain_ticket(experiment, ones, path, os.path.join(workdir, "retrain"), recipe)
    print(f"  dense: retrained accuracy {metrics['retrained_test_accuracy']:.4f}", flush=True)
    return metrics["retrained_test_accuracy"]


def mean_std(values, fmt):
    if not values:
        return "–"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(np.mean(values), fmt)} ± {format(np.std(values, ddof=1), fmt)}"


def table(rows, targets, seeds, dense, notes):
    lines = ["| method | target sparsity | seeds reaching it | sparsity reached | search rounds "
             "| search epochs | retrained test accuracy |",
             "|---|---|---|---|---|---|---|"]
    for method, per_seed in rows.items():
        for target in targets:
            found = [r[target] for r in per_seed if r.get(target)]
            lines.append(
                f"| {method} | {target:.0%} | {len(found)}/{len(per_seed)} | "
                f"{mean_std([r['sparsity'] for r in found], '.4f')} | "
                f"{mean_std([r['rounds'] for r in found], '.1f')} | "
                f"{mean_std([r['search_epochs'] for r in found], '.1f')} | "
                f"{mean_std([r['retrained_test_accuracy'] for r in found], '.4f')} |")
    lines.append(f"| dense | 0% | {len(dense)}/{len(seeds)} | 0.0000 | – | – | "
                 f"{mean_std(dense, '.4f')} |")
    return "\n".join(lines + [""] + [f"- {note}" for note in notes])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny data, 1 epoch per round, few rounds: checks that it runs")
    parser.add_argument("--seeds", type=int, default=None, help="default 3 (--quick: 1)")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.95],
                        help="target sparsities (fractions removed)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per round (default 3)")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--cs_l1_penalty", type=float, default=1e-6)
    parser.add_argument("--s0", type=float, nargs="+", default=[0.0],
                        help="CS initial scores s_0: one CS run (and table rows) per value")
    parser.add_argument("--cs_max_rounds", type=int, default=None)
    parser.add_argument("--imp_prune_fraction", type=float, default=0.2)
    parser.add_argument("--imp_max_rounds", type=int, default=None)
    parser.add_argument("--methods", nargs="+", choices=["CS", "IMP"], default=["CS", "IMP"])
    parser.add_argument("--exclude", nargs="*", default=["output"],
                        help="layers left dense by both methods (default: the output layer, the "
                             "CS paper's Sec. 4.2 convention); none: prune every layer")
    parser.add_argument("--workdir", default=None, help="kept for inspection; default: a temp dir")
    args = parser.parse_args(argv)
    if len(set(args.s0)) != len(args.s0):
        parser.error(f"--s0 repeats a value: {args.s0}")
    args.epochs = args.epochs or (1 if args.quick else 3)
    args.seeds = args.seeds or (1 if args.quick else 3)
    prunings = math.ceil(math.log(1 - max(args.targets)) / math.log(1 - args.imp_prune_fraction))
    args.imp_max_rounds = args.imp_max_rounds or prunings + 1  # round 0 trains the dense net
    args.cs_max_rounds = args.cs_max_rounds or (3 if args.quick else 8)
    return args


def main(argv=None):
    args = parse_args(argv)
    if not os.path.exists(os.path.join(DEBIAN_FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")):
        print(f"real Fashion-MNIST is needed in {DEBIAN_FASHION_MNIST_DIR} "
              "(apt-get install dataset-fashion-mnist)", file=sys.stderr)
        return 1
    root = args.workdir or tempfile.mkdtemp(prefix="cs_vs_imp_")
    size = dict(train_examples=2048, test_examples=1000) if args.quick else {}
    recipe = make_recipe(args)
    notes = [f"LeNet-300-100 on Fashion-MNIST{' (quick: 2048/1000 examples)' if args.quick else ''}"
             f", Adam {args.learning_rate:g}, batch {args.batch_size}, {args.epochs} epoch(s) per "
             f"round; tickets retrained from w_0 for {args.epochs} epoch(s)"]
    dense_layers = ", ".join(args.exclude) or "none"
    notes.append(f"left dense by both methods and not counted in the sparsities: {dense_layers}"
                 f" (CS paper Sec. 4.2 convention: no mask for IMP, no m nor s for CS)")
    if "CS" in args.methods:
        values = ", ".join(f"{s0:g}" for s0 in args.s0)
        notes.append(f"CS: λ = {args.cs_l1_penalty:g}, s_0 ∈ {{{values}}} (one row each), β 1 → "
                     f"100 (exponential), rewinding to w_0, at most {args.cs_max_rounds} rounds")
    if "IMP" in args.methods:
        notes.append(f"IMP: prune fraction {args.imp_prune_fraction:g} per round, rewinding to "
                     f"w_0, at most {args.imp_max_rounds} rounds")
    methods = [cs_label(s0) for s0 in args.s0 if "CS" in args.methods]
    methods += ["IMP"] if "IMP" in args.methods else []
    rows = {method: [] for method in methods}
    dense = []
    seeds = list(range(args.seeds))
    start = time.time()
    for seed in seeds:
        print(f"seed {seed}", flush=True)
        dataset = load_dataset("fashion_mnist", source="local", batch_size=args.batch_size,
                               seed=seed, **size)
        dense.append(dense_reference(os.path.join(root, f"dense_seed{seed}"), dataset, seed,
                                     recipe))

        searches = {  # method: (search of num_rounds, most rounds, workdir name)
            cs_label(s0): (functools.partial(
                lambda num_rounds, s0: ContinuousSparsificationSearch(
                    num_rounds=num_rounds, recipe=recipe, l1_penalty=args.cs_l1_penalty,
                    initial_score=s0, rewind_to=INIT, exclude=args.exclude,
                    evaluate_tickets=False), s0=s0), args.cs_max_rounds, f"cs_s0_{s0:g}")
            for s0 in args.s0}
        searches["IMP"] = (lambda num_rounds: IMPSearch(
            prune_fraction=args.imp_prune_fraction, num_rounds=num_rounds, rewind_to=INIT,
            recipe=recipe, exclude=args.exclude), args.imp_max_rounds, "imp")
        for method in methods:
            make_search, most_rounds, name = searches[method]
            experiment, results = search_until(
                make_search, os.path.join(root, f"{name}_seed{seed}"), dataset, seed,
                args.targets, most_rounds)
            rows[method].append(evaluate_targets(method, experiment, results, args.targets,
                                                 recipe))
    notes.append(f"{len(seeds)} seed(s), {time.time() - start:.0f} s in all; runs in {root}")
    print()
    print(table(rows, args.targets, seeds, dense, notes))
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
