"""Benchmark (not a test): the exact top-k of tf_lottery.ops.topk, by method and size.

For 1-D tensors of |N(0, 1)| values of several sizes, k = n/2 (edge-popup's keep fraction), the
time per call of
  count, cold   the counting search without a hint
  count, warm   the counting search from the previous call's threshold, the values having
                moved by N(0, 1e-3) since (as a training step moves scores)
  sort          the stable sort ('auto' uses it on GPUs/TPUs and on CPUs up to
                topk._SORT_UP_TO values)
and the mean number of counting passes of the two searches. Each call first perturbs the values
in place; that cost is timed alone (interleaved with the others) and subtracted.

    python bench/topk.py            # full run
    python bench/topk.py --quick    # a smoke run
"""
import argparse

import _harness  # noqa: F401  (sets sys.path and TF logging first)
import tensorflow as tf
from _harness import add_common_arguments, configure, print_settings, table, time_interleaved

from tf_lottery.ops import topk

SIZES = (1000, 2304, 9216, 36864, 147456, 921600)  # LeNet/ResNet layer sizes among them
DRIFT = 1e-3


def measure(n, args):
    values = tf.Variable(tf.abs(tf.random.normal([n], seed=n)))
    hint = tf.Variable(0)
    probes = tf.Variable(0)
    k = n // 2

    def drift():
        values.assign_add(tf.random.normal([n]) * DRIFT)
        return tf.bitcast(tf.convert_to_tensor(values), tf.int32)

    @tf.function
    def baseline():
        return drift()[0]

    def search(warm):
        @tf.function
        def step():
            keys = drift()
            t, count, _, used = topk.kth_largest_key(keys, k, hint if warm else None)
            probes.assign_add(used)
            if warm:
                hint.assign(t)
            return tf.cond(tf.equal(count, k), lambda: keys >= t, lambda: keys > t)[0]
        return step

    @tf.function
    def sort():
        keep, _ = topk.top_k_threshold(drift(), k, method="sort")
        return keep[0]

    cold, warm = search(False), search(True)
    timings = time_interleaved({"baseline": baseline, "cold": cold, "warm": warm,
                                "sort": sort}, args)
    base = timings["baseline"].median_wall()
    row = [n] + [f"{1000 * (timings[name].median_wall() - base):.2f}"
                 for name in ("cold", "warm", "sort")]
    for step in (cold, warm):  # mean counting passes per call
        probes.assign(0)
        for _ in range(args.steps):
            step()
        row.append(f"{int(probes.numpy()) / args.steps:.1f}")
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    add_common_arguments(parser, steps=40, warmup=5)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.warmup = [1000, 36864], 2
    configure(args)
    print_settings("exact top-k: counting search vs stable sort", args, k="n/2",
                   values="|N(0, 1)|, moved by N(0, 1e-3) before every call",
                   sort_up_to=topk._SORT_UP_TO)
    rows = [measure(n, args) for n in args.sizes]
    print(table(rows, ["n", "count, cold ms", "count, warm ms", "sort ms",
                       "passes, cold", "passes, warm"]))


if __name__ == "__main__":
    main()
