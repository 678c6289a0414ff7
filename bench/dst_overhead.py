"""Benchmark (not a test): what dynamic sparse training costs per training step.

Static sparse training, SET and RigL (tf_lottery.sparsity.dst) on the same network at 90%
sparsity (ERK), SGD with momentum, a fixed batch:

* over a schedule: the mean step time over blocks of ΔT consecutive steps (each block holds
  exactly one mask update), RigL and SET divided by static sparse (goal <= 1.10x);
* the update step itself: the median step time with an update at every step (ΔT = 1) divided
  by the static sparse step.

Blocks and steps of the configurations are timed in interleaved rounds (bench/_harness.py), so
load from other processes hits them alike; ratios are of medians (of block means).

    python bench/dst_overhead.py            # LeNet-300-100 and the Fashion-MNIST conv net
    python bench/dst_overhead.py --quick    # LeNet-300-100 only, fewer blocks
"""
import argparse
import time

import _harness  # noqa: F401  (sets sys.path and TF logging first)
import keras
from _harness import add_common_arguments, configure, print_settings, table, time_interleaved
from _variants import random_batch

from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.models import build_model
from tf_lottery.sparsity import RigL, SparseEvolutionaryTraining, StaticSparse
from tf_lottery.training.sparse_model import SparseModel

GOAL = 1.10
INPUT_SHAPE = (28, 28, 1)
MODELS = {"lenet_300_100": {},
          "conv4": {"plan": [32, "pool", 64, "pool"], "dense_units": [128], "use_bias": False}}
NO_END = 10**9  # updates never stop during the benchmark


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--interval", type=int, default=100, help="ΔT of the schedule")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--xla", action="store_true", help="jit_compile the steps")
    add_common_arguments(parser, steps=20, warmup=1, rounds=5)
    args = parser.parse_args()
    if args.quick:
        args.models = ["lenet_300_100"]
    return args


def make_updater(kind, interval, sparsity):
    if kind == "static":
        return StaticSparse(sparsity=sparsity, distribution="erk")
    cls = RigL if kind == "rigl" else SparseEvolutionaryTraining
    return cls(sparsity=sparsity, distribution="erk", update_interval=interval,
               end_step=NO_END, drop_fraction=0.3)


def compiled(model_name, kind, interval, args):
    keras.utils.set_random_seed(0)
    network = build_model(model_name, INPUT_SHAPE, 10, mask_rule=FixedMask(),
                          **MODELS[model_name])
    model = SparseModel(network)
    model.add_mask_updater(make_updater(kind, interval, args.sparsity))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=args.xla)
    return model


def block(model, x, y, length):
    def run():
        for _ in range(length):
            model.train_on_batch(x, y)
    return run


def measure(model_name, args):
    x, y = random_batch(args.batch, INPUT_SHAPE)
    schedule, every_step, first = {}, {}, {}
    for kind in ("static", "set", "rigl"):
        model = compiled(model_name, kind, args.interval, args)
        start = time.perf_counter()
        model.train_on_batch(x, y)  # builds the optimizer, traces the step
        first[kind] = time.perf_counter() - start
        schedule[kind] = block(model, x, y, args.interval)
        if kind != "static":
            every = compiled(model_name, kind, 1, args)
            every.train_on_batch(x, y)
            every_step[kind] = block(every, x, y, 1)
    every_step["static"] = schedule["static"] if args.interval == 1 else block(
        compiled(model_name, "static", 1, args), x, y, 1)
    return time_interleaved(schedule, args), time_interleaved(every_step, args), first


def main():
    args = parse_args()
    configure(args)
    print_settings("dynamic sparse training overhead per step", args, batch=args.batch,
                   models=", ".join(args.models), input_shape=INPUT_SHAPE,
                   interval=f"ΔT = {args.interval} (timed unit: a block of ΔT steps)",
                   sparsity=f"{args.sparsity} (ERK)", xla=args.xla,
                   optimizer="SGD(0.1, momentum=0.9)")
    rows = []
    for model_name in args.models:
        schedule, every_step, first = measure(model_name, args)
        static = schedule["static"].median_wall() / args.interval
        static_step = every_step["static"].median_wall()
        for kind in ("static", "set", "rigl"):
            mean_step = schedule[kind].median_wall() / args.interval
            ratio = mean_step / static
            update = every_step[kind].median_wall()
            verdict = "" if kind == "static" else ("met" if ratio <= GOAL else "MISSED")
            rows.append([model_name, kind, f"{1000 * mean_step:.2f}", f"{ratio:.3f}",
                         f"{GOAL}" if kind != "static" else "", verdict,
                         f"{1000 * update:.2f}", f"{update / static_step:.2f}",
                         f"{first[kind]:.1f}"])
    print(table(rows, ["model", "updater", f"mean step ms (ΔT={args.interval})",
                       "x static", "goal", "", "update step ms", "update step x static step",
                       "first step s"]))


if __name__ == "__main__":
    main()
