"""Benchmark (not a test): step time and peak memory of masked vs plain Keras models as depth and
width grow (CIFAR ResNet-20/32/56, ResNet-20 at widths 32 and 64, Conv-2/4/6; 32x32x3 inputs).

Step time: per architecture, all variants in one process, timed in interleaved rounds (ratios of
medians, as bench/masked_overhead.py). Memory: every (architecture, variant) in a fresh
subprocess that builds the model and trains a few steps; on a CPU it reports the peak resident
set (resource.getrusage max RSS; tracemalloc does not see TensorFlow's allocations), also less
the RSS the process had with TensorFlow imported before building anything ("model memory"); on
a GPU, tf.config.experimental.get_memory_info's peak.

    python bench/scaling.py            # full run
    python bench/scaling.py --quick    # a smoke run of under two minutes
"""
import argparse
import json
import subprocess
import sys

import _harness  # noqa: F401  (sets sys.path and TF logging first)
import tensorflow as tf
from _harness import (add_common_arguments, configure, gpu_names, peak_rss_mib, print_settings,
                      table, time_interleaved)
from _variants import DESCRIPTIONS, build_variant, random_batch

from tf_lottery.models import count_params

DEFAULT_MODELS = ["resnet20", "resnet32", "resnet56", "resnet20:width=32", "resnet20:width=64",
                  "conv2", "conv4", "conv6"]
DEFAULT_VARIANTS = ["plain", "fixed", "topk", "sigmoid_l1"]
INPUT_SHAPE = (32, 32, 3)


def parse_spec(spec):
    """'resnet20:width=32' -> ('resnet20', {'width': 32})."""
    name, _, options = spec.partition(":")
    kwargs = {}
    for item in filter(None, options.split(",")):
        key, value = item.split("=")
        kwargs[key] = int(value)
    return name, kwargs


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS,
                        help="zoo names, with builder options as name:key=value,...")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--memory-steps", type=int, default=3,
                        help="training steps of each memory subprocess")
    parser.add_argument("--parallel", type=int, default=2,
                        help="memory subprocesses run at the same time (timing is separate)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.models, args.variants = ["conv2", "resnet20"], ["plain", "fixed", "topk"]
        args.batch, args.warmup, args.memory_steps = 32, 1, 2
    if "plain" not in args.variants:
        args.variants = ["plain"] + args.variants
    return args


def build(spec, variant, jit_compile=False):
    name, options = parse_spec(spec)
    return build_variant(name, variant, INPUT_SHAPE, jit_compile, **options)


def memory_worker(args):
    """In a fresh process: build one variant, train a few steps, print its peak memory."""
    configure(args)
    baseline = peak_rss_mib()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        tf.config.experimental.reset_memory_stats("GPU:0")
    model = build(args.models[0], args.variants[0])
    x, y = random_batch(args.batch, INPUT_SHAPE)
    for _ in range(args.memory_steps):
        model.train_on_batch(x, y)
    result = {"peak_rss_mib": peak_rss_mib(), "baseline_rss_mib": baseline}
    if gpus:
        result["gpu_peak_mib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    print("RESULT " + json.dumps(result))


def measure_memory(configurations, args):
    """{(spec, variant): worker result}, from fresh subprocesses, `args.parallel` at a time."""
    results, running, pending = {}, [], list(configurations)
    while pending or running:
        while pending and len(running) < args.parallel:
            spec, variant = pending.pop(0)
            command = [sys.executable, __file__, "--worker", "--models", spec, "--variants",
                       variant, "--batch", str(args.batch), "--memory-steps",
                       str(args.memory_steps), "--threads", str(args.threads),
                       "--inter-op-threads", str(args.inter_op_threads)]
            running.append(((spec, variant), subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)))
        configuration, process = running.pop(0)
        out, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"memory worker for {configuration} failed")
        line = next(line for line in out.splitlines() if line.startswith("RESULT "))
        results[configuration] = json.loads(line[len("RESULT "):])
    return results


def main():
    args = parse_args()
    if args.worker:
        return memory_worker(args)
    configure(args)
    memory_kind = "GPU peak (get_memory_info)" if gpu_names() else "peak RSS (getrusage)"
    print_settings("scaling of step time and memory with depth and width", args,
                   batch=args.batch, models=", ".join(args.models), input_shape=INPUT_SHAPE,
                   variants=", ".join(args.variants), memory=f"{memory_kind}, fresh subprocess "
                   f"per configuration, {args.memory_steps} training steps",
                   xla="off", optimizer="SGD(0.1, momentum=0.9)")
    x, y = random_batch(args.batch, INPUT_SHAPE)
    all_memory = measure_memory([(s, v) for s in args.models for v in args.variants], args)
    rows = []
    for spec in args.models:
        models = {v: build(spec, v) for v in args.variants}
        params = count_params(models["plain"])
        timings = time_interleaved(
            {v: (lambda m=m: m.train_on_batch(x, y)) for v, m in models.items()}, args)
        del models
        memory = {v: all_memory[spec, v] for v in args.variants}
        plain_time = timings["plain"].median_wall()
        key = "gpu_peak_mib" if "gpu_peak_mib" in memory["plain"] else "peak_rss_mib"
        plain_peak = memory["plain"][key]
        plain_own = plain_peak - memory["plain"]["baseline_rss_mib"]
        for variant in args.variants:
            t, mem = timings[variant].median_wall(), memory[variant]
            own = mem[key] - mem["baseline_rss_mib"]
            rows.append([spec, f"{params / 1e6:.2f}M", DESCRIPTIONS[variant],
                         f"{1000 * t:.1f}", f"{t / plain_time:.2f}",
                         f"{mem[key]:.0f}", f"{mem[key] / plain_peak:.2f}",
                         "" if key == "gpu_peak_mib" else f"{own:.0f}",
                         "" if key == "gpu_peak_mib" or plain_own <= 0
                         else f"{own / plain_own:.2f}"])
        print(table(rows[-len(args.variants):], HEADER), "\n", flush=True)
    print("## all results\n")
    print(table(rows, HEADER))


HEADER = ["model", "params", "variant", "step ms", "time x plain", "peak MiB", "peak x plain",
          "model MiB (peak - baseline)", "model x plain"]

if __name__ == "__main__":
    main()
