"""Benchmark (not a test): what the mask machinery costs per training step.

Train-step time of masked zoo models (FixedMask, TopKScores with frozen weights as edge-popup
trains, SigmoidScores with and without continuous sparsification's L1 term) divided by the step
time of the same architecture built of plain Keras layers (tf_lottery.export.to_plain_model), for
LeNet-300-100, Conv-2 and ResNet-20 on 32x32x3 inputs, batch 128, with jit_compile (XLA) off
and on. SigmoidScores trains scores as well as weights, so it is also divided by its floor: the
plain step whose optimizer also updates a second kernel-sized variable (`plain_x2`).
The variants of one (model, XLA) pair are timed in interleaved rounds, so load from other
processes hits them alike; ratios are of medians. "CPU" ratios use this process's CPU time
(all its threads), less sensitive than wall time to sharing the machine.

Goals (over each variant's floor, `_variants.FLOORS`): FixedMask <= 1.05x, TopKScores <= 1.30x
of plain; SigmoidScores <= 1.15x of plain_x2.

    python bench/masked_overhead.py            # full run
    python bench/masked_overhead.py --quick    # a smoke run of under two minutes
"""
import argparse
import time

import _harness  # noqa: F401  (sets sys.path and TF logging first)
import tensorflow as tf
from _harness import add_common_arguments, configure, print_settings, table, time_interleaved
from _variants import (DESCRIPTIONS, FLOORS, VARIANTS, build_network, build_variant,
                       random_batch)

from tf_lottery.layers.masked import masked_layers

GOALS = {"fixed": 1.05, "sigmoid": 1.15, "sigmoid_l1": 1.15, "topk": 1.30}
INPUT_SHAPE = (32, 32, 3)
HEADER = ["model", "batch", "XLA", "variant", "step ms", "first step s", "x plain (wall)",
          "x plain (CPU)", "x floor (wall)", "goal", ""]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["lenet_300_100", "conv2", "resnet20"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--xla", choices=["off", "on", "both"], default="both")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--no-mask-profile", action="store_true",
                        help="skip timing the mask machinery alone")
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.quick:  # the full settings stay the defaults; quick ones are printed
        args.warmup = 1
    floors = ["plain"] + [FLOORS[v] for v in args.variants if v in FLOORS]
    args.variants = [v for v in VARIANTS if v in args.variants or v in floors]
    return args


def batch_size(args, model):
    return 32 if args.quick and model != "lenet_300_100" else args.batch


def xla_settings(args, model):
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    if args.quick and model != "lenet_300_100":
        return [False]  # compiling conv nets with XLA on a CPU takes longer than the quick budget
    return settings


def measure(model_name, jit_compile, args):
    x, y = random_batch(batch_size(args, model_name), INPUT_SHAPE)
    steps, first_step = {}, {}
    for variant in args.variants:
        model = build_variant(model_name, variant, INPUT_SHAPE, jit_compile)
        start = time.perf_counter()
        model.train_on_batch(x, y)  # builds the optimizer, traces (and compiles) the step
        first_step[variant] = time.perf_counter() - start
        steps[variant] = lambda model=model: model.train_on_batch(x, y)
    return time_interleaved(steps, args), first_step


def mask_op_step(model_name, variant, jit_compile):
    """The mask machinery alone: forward and backward of Σ_l ⟨θ_l ⊙ m_l, C_l⟩ over the
    model's masked layers (θ_l alone for `plain`), gradients to what the variant trains."""
    network = build_network(model_name, "fixed" if variant == "plain" else variant,
                            INPUT_SHAPE)
    layers = masked_layers(network)
    cotangents = [tf.random.normal(layer.mask.shape, seed=1) for layer in layers]
    sources = [v for layer in layers for v in (layer.raw_kernel, layer.scores)
               if v is not None and not (variant == "topk" and v is layer.raw_kernel)]

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            kernels = [layer.raw_kernel * (1.0 if variant == "plain" else
                                           layer.effective_mask(training=True))
                       for layer in layers]
            loss = tf.add_n([tf.reduce_sum(k * c) for k, c in zip(kernels, cotangents)])
        return tape.gradient(loss, sources)[0][0]

    return lambda: step().numpy()


def profile_masks(args):
    rows = []
    for model_name in args.models:
        for jit_compile in xla_settings(args, model_name):
            steps = {v: mask_op_step(model_name, v, jit_compile)
                     for v in ("plain", "fixed", "topk", "sigmoid")}
            timings = time_interleaved(steps, args)
            base = timings["plain"].median_wall()
            for variant, t in timings.items():
                rows.append([model_name, "on" if jit_compile else "off", DESCRIPTIONS[variant],
                             f"{1000 * t.median_wall():.2f}",
                             f"{1000 * (t.median_wall() - base):.2f}"])
    print("\n## the mask machinery alone (all masked layers, forward + backward of the "
          "effective kernels; no data)\n")
    print(table(rows, ["model", "XLA", "rule", "ms", "ms over plain kernels"]))


def main():
    args = parse_args()
    configure(args)
    print_settings("masked-layer overhead per training step", args,
                   batch=f"{args.batch}" + (" (quick: 32 for conv nets)" if args.quick else ""),
                   models=", ".join(args.models), input_shape=INPUT_SHAPE,
                   xla="off and on (quick: conv nets off only)" if args.xla == "both" and
                   args.quick else args.xla, optimizer="SGD(0.1, momentum=0.9)")
    rows, medians = [], {}
    for model_name in args.models:
        for jit_compile in xla_settings(args, model_name):
            timings, first_step = measure(model_name, jit_compile, args)
            plain = timings["plain"]
            for variant in args.variants:
                t = timings[variant]
                medians[model_name, jit_compile, variant] = t.median_wall()
                wall = t.median_wall() / plain.median_wall()
                cpu = t.median_cpu() / plain.median_cpu()
                floor = t.median_wall() / timings[FLOORS.get(variant, "plain")].median_wall()
                goal = GOALS.get(variant)
                verdict = "" if goal is None else ("met" if floor <= goal else "MISSED")
                rows.append([model_name, batch_size(args, model_name),
                             "on" if jit_compile else "off", DESCRIPTIONS[variant],
                             f"{1000 * t.median_wall():.1f}", f"{first_step[variant]:.1f}",
                             f"{wall:.3f}", f"{cpu:.3f}",
                             f"{floor:.3f}" if variant in FLOORS else "",
                             "" if goal is None else f"<= {goal:.2f}", verdict])
            print(table(rows[-len(args.variants):], HEADER), "\n", flush=True)
    print("## all results\n")
    print(table(rows, HEADER))
    xla_rows = [[m, DESCRIPTIONS[v], f"{medians[m, True, v] / medians[m, False, v]:.2f}",
                 "XLA on" if medians[m, True, v] < medians[m, False, v] else "XLA off"]
                for m in args.models for v in args.variants
                if (m, True, v) in medians and (m, False, v) in medians]
    if xla_rows:
        print("\n## XLA on / XLA off (step time; < 1: XLA faster; measured in separate "
              "rounds, so noisier than the ratios above)\n")
        print(table(xla_rows, ["model", "variant", "on / off", "faster"]))
    if not args.no_mask_profile:
        profile_masks(args)


if __name__ == "__main__":
    main()
