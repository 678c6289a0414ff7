"""Benchmark (not a test): what each ticket search costs to reach one sparsity on real
Fashion-MNIST (LeNet-300-100): total training epochs and wall time, side by side.

  IMP       iterative magnitude pruning, prune fraction p per round, rewinding to w_0 (Adam)
  CS        continuous sparsification (Adam for w; λ, s_0 as bench/cs_vs_imp.py), rounds until
            the ticket is at least as sparse as the target (or --cs-max-rounds)
  EP        edge-popup: one cycle at the target's remaining fraction (SGD 0.1, cosine)
  soft iEP  --cycles cycles shrinking to the target, scores inherited (the soft iEP default)

The cost of a method is counted up to the first round whose ticket reaches the target: epochs
of search training (`search_epochs`) and the rounds' wall time as the search records it
(`wall_time_s`: training plus the round's evaluation), plus the whole process time of the run.

    python bench/search_cost.py            # full data, target 80% sparsity
    python bench/search_cost.py --quick    # 2048 images, target 50%: a smoke run
"""
import argparse
import os
import sys
import tempfile
import time

import _harness  # noqa: F401  (sets sys.path and TF logging first)
from _harness import configure, print_settings, table
from cs_vs_imp import MODEL, make_experiment, search_until

from tf_lottery.data import load_dataset
from tf_lottery.data.datasets import DEBIAN_FASHION_MNIST_DIR
from tf_lottery.search.continuous_sparsification import ContinuousSparsificationSearch
from tf_lottery.search.edge_popup import EdgePopupSearch
from tf_lottery.search.imp import IMPSearch
from tf_lottery.search.rewind import INIT
from tf_lottery.training.recipe import TrainingRecipe


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--target-sparsity", type=float, default=0.8)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per round / cycle")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--imp-prune-fraction", type=float, default=0.2)
    parser.add_argument("--cs-l1-penalty", type=float, default=1e-6)
    parser.add_argument("--cs-max-rounds", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=3, help="soft iEP cycles")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--inter-op-threads", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.target_sparsity, args.epochs, args.imp_prune_fraction = 0.5, 1, 0.5
        args.cs_max_rounds, args.cycles = 2, 2
    return args


def adam(args):
    return TrainingRecipe(optimizer="adam", learning_rate=1e-3, weight_decay=0.0,
                          epochs=args.epochs, lr_schedule="constant")


def sgd(args):
    return TrainingRecipe(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4,
                          epochs=args.epochs, lr_schedule="cosine")


def searches(args):
    """{method: (make_search(num_rounds), most rounds)}."""
    remaining = 1.0 - args.target_sparsity
    prunings = 0
    while (1 - args.imp_prune_fraction) ** prunings > remaining + 1e-9:
        prunings += 1
    methods = {"IMP": (lambda n: IMPSearch(prune_fraction=args.imp_prune_fraction, num_rounds=n,
                                           rewind_to=INIT, recipe=adam(args)),
                       prunings + 1)}  # round 0 trains the dense network
    methods["CS"] = (lambda n: ContinuousSparsificationSearch(
        num_rounds=n, recipe=adam(args), l1_penalty=args.cs_l1_penalty, initial_score=0.0,
        rewind_to=INIT, evaluate_tickets=False), args.cs_max_rounds)
    methods["EP"] = (lambda n: EdgePopupSearch(variant="ep", remaining_schedule=[remaining],
                                               recipe=sgd(args)), 1)
    methods["soft iEP"] = (lambda n: EdgePopupSearch(
        variant="soft_lr", cycles=args.cycles, target_remaining=remaining, recipe=sgd(args)),
        1)
    return methods


def main():
    args = parse_args()
    if not os.path.exists(os.path.join(DEBIAN_FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")):
        print(f"real Fashion-MNIST is needed in {DEBIAN_FASHION_MNIST_DIR}", file=sys.stderr)
        return 1
    configure(args)
    size = dict(train_examples=2048, test_examples=1000) if args.quick else {}
    dataset = load_dataset("fashion_mnist", source="local", batch_size=args.batch,
                           seed=args.seed, **size)
    methods = searches(args)
    print_settings("search cost to one sparsity", args, model=MODEL,
                   data=f"Fashion-MNIST, {dataset.info.num_train_examples} training images",
                   batch=args.batch, target_sparsity=args.target_sparsity,
                   epochs_per_round=args.epochs, seed=args.seed,
                   recipes="IMP/CS: Adam 1e-3 constant; EP/soft iEP: SGD 0.1 momentum 0.9 "
                           "cosine, weight decay 1e-4",
                   imp=f"prune fraction {args.imp_prune_fraction}",
                   cs=f"λ {args.cs_l1_penalty:g}, s_0 0, at most {args.cs_max_rounds} rounds",
                   soft_iep=f"{args.cycles} cycles")
    rows = []
    with tempfile.TemporaryDirectory(prefix="search_cost_") as root:
        for method, (make_search, most_rounds) in methods.items():
            start = time.perf_counter()
            workdir = os.path.join(root, method.replace(" ", "_"))
            if most_rounds > 1:
                _, results = search_until(make_search, workdir, dataset, args.seed,
                                          [args.target_sparsity], most_rounds)
            else:
                results = make_experiment(workdir, make_search(1), dataset, args.seed).run()
            process = time.perf_counter() - start
            hit = next((r for r in results if r["sparsity"] >= args.target_sparsity - 1e-9),
                       None)
            counted = results[:results.index(hit) + 1] if hit else results
            last = counted[-1]
            rows.append([method, "yes" if hit else "NO", f"{last['sparsity']:.4f}",
                         len(counted), last["search_epochs"],
                         f"{sum(r['wall_time_s'] for r in counted):.1f}", f"{process:.1f}",
                         f"{last['test_accuracy']:.4f}"])
            print(f"  {method}: {rows[-1]}", flush=True)
    print()
    print(table(rows, ["method", "reached target", "sparsity", "rounds", "search epochs",
                       "rounds' wall s", "process wall s", "round test accuracy"]))
    print("\n- round test accuracy: what each search records for the round that reached the "
          "target (EP/soft iEP: the ticket itself, weights never trained; IMP and CS: the "
          "network trained in that round); not comparable across methods without retraining "
          "(bench/cs_vs_imp.py retrains)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
