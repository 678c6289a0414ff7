"""Benchmark (not a test): ResNet-18 (CIFAR stem) training and inference throughput in images per
second on CIFAR-10-shaped data (32x32x3, 10 classes), plain Keras layers against masked layers
(FixedMask, TopKScores as edge-popup trains, SigmoidScores with CS's L1 term). All variants are
timed in interleaved rounds; throughput = batch / median step time.

    python bench/resnet18_throughput.py            # batch 128
    python bench/resnet18_throughput.py --quick    # batch 16, plain and FixedMask only
"""
import argparse

import _harness  # noqa: F401  (sets sys.path and TF logging first)
from _harness import add_common_arguments, configure, gpu_names, print_settings, table
from _harness import time_interleaved
from _variants import DESCRIPTIONS, VARIANTS, build_variant, random_batch

from tf_lottery.models import count_params

INPUT_SHAPE = (32, 32, 3)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--variants", nargs="+", default=["plain", "fixed", "topk", "sigmoid_l1"],
                        choices=VARIANTS)
    parser.add_argument("--xla", choices=["auto", "off", "on"], default="auto",
                        help="auto: XLA on a GPU only (TrainingRecipe's rule)")
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.batch, args.variants, args.warmup = 16, ["plain", "fixed"], 1
    if "plain" not in args.variants:
        args.variants = ["plain"] + args.variants
    return args


def main():
    args = parse_args()
    configure(args)
    jit_compile = {"auto": bool(gpu_names()), "off": False, "on": True}[args.xla]
    print_settings("ResNet-18 (CIFAR stem) throughput", args, batch=args.batch,
                   input_shape=INPUT_SHAPE, xla=jit_compile,
                   variants=", ".join(args.variants), optimizer="SGD(0.1, momentum=0.9)")
    x, y = random_batch(args.batch, INPUT_SHAPE)
    models = {v: build_variant("resnet18", v, INPUT_SHAPE, jit_compile, stem="cifar")
              for v in args.variants}
    print(f"parameters: {count_params(models['plain']) / 1e6:.2f}M\n", flush=True)
    train = time_interleaved({v: (lambda m=m: m.train_on_batch(x, y))
                              for v, m in models.items()}, args)
    infer = time_interleaved({v: (lambda m=m: m.predict_on_batch(x))
                              for v, m in models.items()}, args)
    rows = []
    for variant in args.variants:
        t, i = train[variant].median_wall(), infer[variant].median_wall()
        rows.append([DESCRIPTIONS[variant], f"{args.batch / t:.1f}",
                     f"{train['plain'].median_wall() / t:.2f}", f"{args.batch / i:.1f}",
                     f"{infer['plain'].median_wall() / i:.2f}"])
    print(table(rows, ["variant", "training images/s", "x plain", "inference images/s",
                       "x plain"]))


if __name__ == "__main__":
    main()
