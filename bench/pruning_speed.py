"""Benchmark (not a test): what gradual magnitude pruning costs per training step, against plain
Keras and against tfmot 0.8 (the anchor), side by side in one run.

For each architecture (LeNet-300-100, a small CNN; 28×28×1 inputs, batch 128, SGD with momentum,
XLA off), `model.fit` is timed on a fixed batch over a PolynomialDecay schedule (0 → 80% between
steps 0 and 1000, `frequency=100`), in rounds of exactly `frequency` steps so that every round
holds one mask update: the mean step time (update steps included) of

* plain: the Keras 3 model;
* tf_lottery: `tf_lottery.sparsity.prune_low_magnitude` of it, trained with plain `fit`;
* tfmot plain / tfmot: the same architecture in `tf_keras` and tfmot's `prune_low_magnitude`
  with its `UpdatePruningStep` callback, in a separate process (importing tfmot switches
  `tf.keras` to Keras 2 for the whole process), its rounds interleaved the same way.

Goals: tf_lottery / plain ≤ 1.05 on average (≤ 1.10 on dense-heavy LeNet-300-100), and
tf_lottery not slower than tfmot.

tfmot needs its own environment; one that reuses this checkout's TensorFlow:

    python3 -m venv /work/venv_tfmot
    /work/venv_tfmot/bin/pip install --no-deps tf_keras==2.21.0 \
        tensorflow-model-optimization==0.8.0 dm-tree
    echo $PWD/.venv/lib/python3.11/site-packages > \
        /work/venv_tfmot/lib/python3.11/site-packages/main_venv.pth

    python bench/pruning_speed.py --tfmot-python /work/venv_tfmot/bin/python
    python bench/pruning_speed.py --quick      # fewer rounds; without tfmot if not given
"""
import argparse
import json
import os
import subprocess
import sys
import time

import _harness  # noqa: F401  (sets sys.path and TF logging first)
import numpy as np
import tensorflow as tf

ARCHITECTURES = ("lenet_300_100", "cnn")
INPUT_SHAPE = (28, 28, 1)
FINAL_SPARSITY = 0.8
END_STEP = 1000


def build(layers, name):
    """The architecture from a Keras module's `layers` (Keras 3 or tf_keras: same calls)."""
    if name == "lenet_300_100":
        hidden = [layers.Flatten(), layers.Dense(300, activation="relu"),
                  layers.Dense(100, activation="relu")]
    else:
        hidden = [layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
                  layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(),
                  layers.Flatten(), layers.Dense(128, activation="relu")]
    return [layers.InputLayer(INPUT_SHAPE)] + hidden + [layers.Dense(10)]


def batches(batch_size):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, *INPUT_SHAPE), dtype=np.float32)
    y = rng.integers(0, 10, batch_size).astype(np.int32)
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def time_rounds(configs, args):
    """configs: {name: (model, callbacks)}. One warm-up round each, then `args.rounds` rounds of
    `args.frequency` fit steps visiting the configurations in turn; {name: mean ms per step}."""
    data = batches(args.batch)
    for model, callbacks in configs.values():
        model.fit(data, steps_per_epoch=args.frequency, epochs=1, verbose=0, callbacks=callbacks,
                  shuffle=False)
    total = {name: 0.0 for name in configs}
    for _ in range(args.rounds):
        for name, (model, callbacks) in configs.items():
            start = time.perf_counter()
            model.fit(data, steps_per_epoch=args.frequency, epochs=1, verbose=0,
                      callbacks=callbacks, shuffle=False)
            total[name] += time.perf_counter() - start
    return {name: 1000 * seconds / (args.rounds * args.frequency)
            for name, seconds in total.items()}


def measure_tf_lottery(name, args):
    import keras

    import tf_lottery.sparsity as sparsity

    keras.utils.set_random_seed(0)
    plain = keras.Sequential(build(keras.layers, name))
    schedule = sparsity.PolynomialDecay(0.0, FINAL_SPARSITY, begin_step=0, end_step=END_STEP,
                                        frequency=args.frequency)
    pruned = sparsity.prune_low_magnitude(plain, pruning_schedule=schedule)
    for model in (plain, pruned):
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=False,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return time_rounds({"plain": (plain, []), "tf_lottery": (pruned, [])}, args)


def measure_tfmot(name, args):
    """Runs in the tfmot process only."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    plain = tf_keras.Sequential(build(tf_keras.layers, name))
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, FINAL_SPARSITY, begin_step=0,
                                                    end_step=END_STEP, frequency=args.frequency)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        tf_keras.Sequential(build(tf_keras.layers, name)), pruning_schedule=schedule)
    for model in (plain, pruned):
        model.compile(optimizer=tf_keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return time_rounds({"tfmot plain": (plain, []),
                        "tfmot": (pruned, [tfmot.sparsity.keras.UpdatePruningStep()])}, args)


def run_tfmot(args):
    """{architecture: {name: ms}} from a separate tfmot process, or None."""
    if not args.tfmot_python:
        return None
    command = [args.tfmot_python, os.path.abspath(__file__), "--worker",
               "--architectures", *args.architectures, "--rounds", str(args.rounds),
               "--frequency", str(args.frequency), "--batch", str(args.batch),
               "--threads", str(args.threads), "--inter-op-threads", str(args.inter_op_threads)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"tfmot process failed:\n{result.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES),
                        choices=ARCHITECTURES)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--frequency", type=int, default=100, help="steps between mask updates")
    parser.add_argument("--tfmot-python", default=os.environ.get("TFMOT_PYTHON"),
                        help="a Python with tfmot 0.8 and tf_keras (module docstring)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    _harness.add_common_arguments(parser, rounds=8)
    args = parser.parse_args()
    del args.steps, args.warmup  # timed in rounds of whole fit calls, not single steps
    if args.quick:
        args.rounds = 2
    return args


def main():
    args = parse_args()
    _harness.configure(args)
    if args.worker:  # the tfmot process: JSON on the last line of stdout
        print(json.dumps({name: measure_tfmot(name, args) for name in args.architectures}))
        return 0
    _harness.print_settings(
        "Gradual magnitude pruning: train-step cost vs plain Keras and tfmot", args,
        schedule=f"PolynomialDecay 0 -> {FINAL_SPARSITY} over steps 0-{END_STEP}, "
                 f"frequency {args.frequency}; mean of {args.rounds} rounds of "
                 f"{args.frequency} fit steps (one update each), XLA off, batch {args.batch}",
        tfmot=args.tfmot_python or "not run (no --tfmot-python)")
    tfmot_times = run_tfmot(args)  # first, so the two processes never share the cores
    rows = []
    for name in args.architectures:
        ours = measure_tf_lottery(name, args)
        theirs = (tfmot_times or {}).get(name)
        row = [name, f"{ours['plain']:.2f}", f"{ours['tf_lottery']:.2f}",
               f"{ours['tf_lottery'] / ours['plain']:.3f}",
               f"≤ {1.10 if name == 'lenet_300_100' else 1.05:.2f}"]
        if theirs:
            row += [f"{theirs['tfmot plain']:.2f}", f"{theirs['tfmot']:.2f}",
                    f"{theirs['tfmot'] / theirs['tfmot plain']:.3f}",
                    f"{ours['tf_lottery'] / theirs['tfmot']:.3f}"]
        else:
            row += ["–"] * 4
        rows.append(row)
    print(_harness.table(rows, [
        "model", "plain ms/step", "tf_lottery ms/step", "tf_lottery / plain", "goal",
        "tfmot plain ms/step", "tfmot ms/step", "tfmot / its plain",
        "tf_lottery / tfmot (goal ≤ 1)"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
