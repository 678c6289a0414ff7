"""Benchmark (not a test): inference latency and size of pruned tickets, dense vs unstructured
90% vs 2:4 vs channel-thinned, through TensorFlow (SavedModel) and the TFLite interpreter on this
CPU, side by side in one run (issue #20, item 5).

Models: ResNet-20 (`zoo.cifar_resnet(depth=20)`, 32x32x3) and a MobileNet-style net (Keras'
MobileNetV2, alpha 1.0, 96x96x3, 10 classes, masked with `sparsify`). Variants of each, all from
the same random weights:

* dense: every mask at ones;
* unstructured 90%: `magnitude_masks(model, 0.9, scope='layerwise')`, every masked layer
  (depthwise and classifier included);
* 2:4: `n_m_mask(kernel, 2, 4)` along the input channels of every Conv2D and Dense kernel (the
  GEMM reductions N:M hardware accelerates; depthwise kernels reduce over no channel axis and
  stay dense);
* thinned: `prune_channels(model, f, 'l1', 'layerwise')` for f = 0.5 and 0.25 of the channels
  of every channel group (residual streams included), then `export.thin`, a plain model with
  the pruned channels physically removed (its outputs, and its exports', are checked against
  the masked model's and the maximum differences printed).

The networks are untrained (random init, BatchNorm statistics randomised so that it is not the
identity): latency and size depend only on the structure, never on the values, so there is no
accuracy here, and "the same accuracy budget" cannot be matched; the channel fraction is a
setting (--channel-fractions) and the MACs it saves are printed. Every variant is exported with
`export_saved_model` (timed through `tf.saved_model.load(path).serve`) and `export_tflite`
(timed through `tf.lite.Interpreter`); for unstructured and 2:4 also with TFLite's sparse weight
encoding (`sparse=True`), and dense and the first thinned variant also as full-integer int8
(`quantize='int8'`, calibrated on 64 random inputs). Whether the interpreter runs sparse
kernels or densifies the weights at load time is read from the file's ops and printed: XNNPACK
(TFLite's default CPU delegate) has a sparse path only for MobileNet-like graphs of 1x1 convs
behind a 3x3 stride-2 stem, and on x86 only for pre-AVX CPUs (google/XNNPACK#3170). The
interpreter is `tf.lite.Interpreter` (deprecated in favour of `ai_edge_litert`, not installed
here), run in this process.

Latency: median wall time of one synchronous call (batch 1 and batch 64) over many calls after
warm-up; the variants of one (model, runtime, batch) are interleaved in rounds so that load from
other processes hits them alike. TF and TFLite use the same thread count (printed). Sizes: raw
bytes and gzip bytes (`export.sizes.export_sizes`: a tar.gz of the SavedModel folder, the
.tflite file gzip'd).

Goal: the thinned model's speedup over dense is at least 0.8x its MAC reduction (each runtime,
each batch). Unstructured and N:M sparsity are reported as measured: on a CPU without sparse
kernels they give nothing but smaller (gzip'd or sparse-encoded) files. GPU rows (TensorRT, cuSPARSELt) are measured
only where a GPU is present, and not by this script yet: it says so.

    python bench/inference.py            # full run (12 minutes on 2 shared cores, 7 exporting)
    python bench/inference.py --quick    # a smoke run: fewer calls, one thinned variant, no
                                         # sparse-encoded or int8 files (a few minutes)
"""
import argparse
import copy
import os
import tempfile
import time
import warnings

import _harness  # noqa: F401  (sets sys.path and TF logging first)
import keras
import numpy as np
import tensorflow as tf
from _harness import (add_common_arguments, configure, gpu_names, print_settings, table,
                      time_interleaved)

from tf_lottery.analysis import flops
from tf_lottery.export import export_saved_model, export_tflite, to_plain_model
from tf_lottery.export.sizes import export_sizes
from tf_lottery.export.thin import thin
from tf_lottery.layers.masked import masked_layers, plain_class
from tf_lottery.masks import reset_masks, set_masks
from tf_lottery.models import zoo
from tf_lottery.models.sparsify import sparsify
from tf_lottery.pruning.magnitude import magnitude_masks
from tf_lottery.sparsity.channels import prune_channels
from tf_lottery.sparsity.n_m import n_m_mask

warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")

GOAL = 0.8  # thinned speedup / MAC reduction
MODELS = ("resnet20", "mobilenet_v2")
BATCHES = (1, 64)
TFLITE_EXTRAS = {  # extra TFLite files: variant kind -> [(label, export_tflite options)]
    "dense": [("int8", {"quantize": "int8"})],
    "unstructured": [("sparse-encoded", {"sparse": True})],
    "2:4": [("sparse-encoded", {"sparse": True})],
    "thinned": [("int8", {"quantize": "int8"})],
}
HEADER = ["variant", "MACs (M)", "MAC reduction", "kernel nnz", "stored params",
          "SavedModel KiB raw / gz", "TFLite KiB raw / gz", "TF b1 ms", "TF b64 ms",
          "TFLite b1 ms", "TFLite b64 ms", "speedup TF b1 / b64", "speedup TFLite b1 / b64",
          f"speedup / MAC red. (goal >= {GOAL})"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sparsity", type=float, default=0.9,
                        help="unstructured (layerwise magnitude) sparsity")
    parser.add_argument("--channel-fractions", type=float, nargs="+", default=[0.5, 0.25],
                        help="fractions of the channels of every channel group pruned (l1): "
                             "one thinned variant each")
    parser.add_argument("--mobilenet-size", type=int, default=96, help="MobileNetV2 input side")
    parser.add_argument("--steps-batch1", type=int, default=300,
                        help="timed calls per configuration at batch 1 (--steps: at batch 64)")
    parser.add_argument("--no-extra-tflite", action="store_true",
                        help="skip the sparse-encoded and int8 TFLite files")
    parser.add_argument("--keep", default=None,
                        help="write the exports to this folder (default: a temporary one)")
    add_common_arguments(parser, steps=40, warmup=5, rounds=10)
    args = parser.parse_args()
    if args.quick:  # the full settings stay the defaults; quick ones are printed
        args.steps, args.steps_batch1, args.warmup, args.rounds = 20, 40, 2, 4
        args.channel_fractions, args.no_extra_tflite = args.channel_fractions[:1], True
    return args


# --- models and variants -----------------------------------------------------------------

def build(name, args):
    """(masked network, input shape) with random weights and randomised BatchNorm."""
    if name == "resnet20":
        network, shape = zoo.cifar_resnet(depth=20), (32, 32, 3)
    else:
        shape = (args.mobilenet_size, args.mobilenet_size, 3)
        network = sparsify(keras.applications.MobileNetV2(
            input_shape=shape, alpha=1.0, weights=None, classes=10,
            classifier_activation=None))
    rng = np.random.default_rng(0)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape[0]
            values = {"gamma": rng.uniform(0.5, 1.5, size), "beta": rng.normal(0, 0.1, size),
                      "moving_mean": rng.normal(0, 0.1, size),
                      "moving_variance": rng.uniform(0.5, 1.5, size)}
            layer.set_weights([values[w.path.rsplit("/", 1)[-1]].astype(np.float32)
                               for w in layer.weights])
    return network, shape


def n_m_masks(network):
    """2:4 masks of the Conv2D/Dense kernels (depthwise kernels left dense, module doc)."""
    return {layer.name: n_m_mask(layer.raw_kernel, 2, 4).numpy()
            for layer in masked_layers(network)
            if not issubclass(plain_class(layer), keras.layers.DepthwiseConv2D)}


def variant_specs(args):
    """[(row label, kind, setting)] of the variants compared."""
    return ([("dense", "dense", None),
             (f"unstructured {args.sparsity:.0%}", "unstructured", args.sparsity),
             ("2:4", "2:4", None)]
            + [(f"thinned ({f:.0%} ch. pruned)", "thinned", f) for f in args.channel_fractions])


def variants(network, shape, args):
    """{label: (kind, plain Keras model)}, and {thinned label: (max |thinned - masked|, max
    |masked|)} on a random batch `x` (also returned)."""
    x = np.random.default_rng(1).standard_normal((8, *shape)).astype(np.float32)
    plain, checks = {}, {}
    for label, kind, setting in variant_specs(args):
        reset_masks(network)
        if kind == "unstructured":
            set_masks(network, magnitude_masks(network, setting, scope="layerwise"))
        elif kind == "2:4":
            set_masks(network, n_m_masks(network))
        elif kind == "thinned":
            set_masks(network, prune_channels(network, setting, criterion="l1",
                                              scope="layerwise"))
        if kind == "thinned":
            plain[label] = kind, thin(network)
            masked_out = np.asarray(network(x, training=False))
            thin_out = np.asarray(plain[label][1](x, training=False))
            checks[label] = (float(np.max(np.abs(masked_out - thin_out))),
                             float(np.max(np.abs(masked_out))))
        else:
            plain[label] = kind, to_plain_model(network)
    reset_masks(network)
    return plain, checks, x


def nonzero_kernels(model):
    counted = [v for v in model.weights if "kernel" in v.path.rsplit("/", 1)[-1]]
    return sum(int(np.count_nonzero(keras.ops.convert_to_numpy(v))) for v in counted)


# --- exports and sizes ---------------------------------------------------------------------

def sizes(path):
    """(raw bytes, gzip bytes): a file, or a folder (sum of its files; a tar.gz of it)."""
    measured = export_sizes(path)
    return measured["bytes"], measured["gzip_bytes"]


def write_tflite(model, path, options, calibration):
    if "quantize" in options and options["quantize"] == "int8":
        options = dict(options, representative_data=calibration)
    return export_tflite(model, path, **options)


def tflite_ops(path):
    """{op name: count} of the TFLite file's graph (before any delegate)."""
    interpreter = tf.lite.Interpreter(model_path=path)
    counts = {}
    for op in interpreter._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts


# --- runtimes ------------------------------------------------------------------------------

def tf_call(loaded, batch, shape):
    """loaded: tf.saved_model.load's object (the call keeps it alive: it owns the variables)."""
    x = tf.constant(np.random.default_rng(2).standard_normal((batch, *shape)), tf.float32)
    return lambda: loaded.serve(x).numpy()


def tflite_call(path, batch, shape, threads):
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads)
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(source["index"], [batch, *shape])
    interpreter.allocate_tensors()
    x = np.random.default_rng(2).standard_normal((batch, *shape)).astype(np.float32)

    def call():
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])
    return call


def exported_outputs(paths, threads, x):
    """The outputs of the SavedModel and of the float TFLite file on `x`."""
    loaded = tf.saved_model.load(paths["saved_model"])
    interpreter = tf.lite.Interpreter(model_path=paths["tflite"], num_threads=threads)
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(source["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], x)
    interpreter.invoke()
    return loaded.serve(tf.constant(x)).numpy(), interpreter.get_tensor(target["index"])


def timings(calls, batch, args):
    """Median ms of each call, interleaved (time_interleaved), with batch 1's step count."""
    settings = copy.copy(args)
    if batch == 1:
        settings.steps = args.steps_batch1
        settings.warmup = 4 * args.warmup
    return {name: 1000 * t.median_wall() for name, t in time_interleaved(calls, settings).items()}


# --- one model -----------------------------------------------------------------------------

def kib(n):
    return f"{n / 1024:.0f}"


def measure(name, args, folder):
    start = time.perf_counter()
    network, shape = build(name, args)
    plain, thin_checks, x_check = variants(network, shape, args)
    calibration = np.random.default_rng(3).standard_normal((64, *shape)).astype(np.float32)
    first_thinned = next(label for label, (kind, _) in plain.items() if kind == "thinned")
    info, files = {}, {}  # files: row label -> {'saved_model', 'tflite'}
    for index, (variant, (kind, model)) in enumerate(plain.items()):
        counted = flops(model)
        info[variant] = {"macs": counted["total_macs"], "nnz": nonzero_kernels(model),
                         "params": model.count_params(), "kind": kind}
        stem = os.path.join(folder, f"{name}_{index}_{kind.replace(':', 'of')}")
        files[variant] = {"saved_model": export_saved_model(model, stem + "_saved_model"),
                          "tflite": export_tflite(model, stem + ".tflite")}
        for label, options in TFLITE_EXTRAS[kind]:
            if args.no_extra_tflite or (kind == "thinned" and variant != first_thinned):
                continue  # int8 of dense and of the first thinned variant only
            row = f"{variant}, TFLite {label}"
            files[row] = {"tflite": write_tflite(model, f"{stem}_{label}.tflite", options,
                                                 calibration)}
            info[row] = dict(info[variant], kind=f"{kind} {label}")
    print(f"[{name}: built, pruned and exported {len(files)} variants in "
          f"{time.perf_counter() - start:.0f} s]", flush=True)

    exported = time.perf_counter()
    loaded = {row: tf.saved_model.load(paths["saved_model"]) for row, paths in files.items()
              if "saved_model" in paths}
    latency = {}  # (row, runtime, batch) -> ms
    for batch in BATCHES:
        for runtime in ("TF", "TFLite"):
            calls = {}
            for row, paths in files.items():
                if runtime == "TF" and row in loaded:
                    calls[row] = tf_call(loaded[row], batch, shape)
                elif runtime == "TFLite" and paths.get("tflite"):
                    calls[row] = tflite_call(paths["tflite"], batch, shape, args.threads)
            for row, ms in timings(calls, batch, args).items():
                latency[row, runtime, batch] = ms
    timed = time.perf_counter() - exported

    dense = info["dense"]["macs"]
    rows, goal_rows = [], []
    for row, paths in files.items():
        reduction = dense / info[row]["macs"]
        saved = sizes(paths["saved_model"]) if "saved_model" in paths else None
        lite = sizes(paths["tflite"]) if paths.get("tflite") else None

        def ms(runtime, batch):
            value = latency.get((row, runtime, batch))
            return "—" if value is None else f"{value:.2f}"

        def speedups(runtime):
            values = [latency[("dense", runtime, b)] / latency[(row, runtime, b)]
                      if (row, runtime, b) in latency else None for b in BATCHES]
            return values, " / ".join("—" if v is None else f"{v:.2f}x" for v in values)

        tf_speedups, tf_text = speedups("TF")
        lite_speedups, lite_text = speedups("TFLite")
        verdict = ""
        if info[row]["kind"] == "thinned":
            ratios = []
            for runtime, values in (("TF", tf_speedups), ("TFLite", lite_speedups)):
                for batch, value in zip(BATCHES, values):
                    ratio = value / reduction
                    ratios.append(f"{ratio:.3f}")
                    goal_rows.append([name, row, runtime, batch, f"{value:.2f}x",
                                      f"{reduction:.2f}x",
                                      f"{ratio:.3f}", "met" if ratio >= GOAL else "MISSED"])
            verdict = "TF " + " / ".join(ratios[:2]) + "; TFLite " + " / ".join(ratios[2:])
        rows.append([row, f"{info[row]['macs'] / 1e6:.2f}", f"{reduction:.2f}x",
                     f"{info[row]['nnz']:,}", f"{info[row]['params']:,}",
                     "—" if saved is None else f"{kib(saved[0])} / {kib(saved[1])}",
                     "—" if lite is None else f"{kib(lite[0])} / {kib(lite[1])}",
                     ms("TF", 1), ms("TF", 64), ms("TFLite", 1), ms("TFLite", 64),
                     tf_text, lite_text, verdict])

    checks = []  # (what, max |diff|, max |output|)
    for variant, (diff, scale) in thin_checks.items():
        saved_out, lite_out = exported_outputs(files[variant], args.threads, x_check)
        keras_out = np.asarray(plain[variant][1](x_check, training=False))
        checks += [(f"{variant}: thinned Keras vs masked model", diff, scale),
                   (f"{variant}: its SavedModel vs thinned Keras",
                    float(np.max(np.abs(saved_out - keras_out))), scale),
                   (f"{variant}: its TFLite vs thinned Keras",
                    float(np.max(np.abs(lite_out - keras_out))), scale)]
    sparse_ops = {row: tflite_ops(paths["tflite"]) for row, paths in files.items()
                  if "sparse-encoded" in row}
    return {"rows": rows, "goal_rows": goal_rows, "checks": checks,
            "shape": shape, "sparse_ops": sparse_ops,
            "seconds": time.perf_counter() - start, "timing_seconds": timed}


def main():
    args = parse_args()
    configure(args)
    gpus = gpu_names()
    print_settings(
        "inference latency and size: dense vs unstructured vs 2:4 vs channel-thinned", args,
        models=", ".join(args.models) + f" (MobileNetV2 alpha 1.0 at {args.mobilenet_size}x"
        f"{args.mobilenet_size}x3, ResNet-20 at 32x32x3)",
        weights="random init, untrained (latency and size depend on the structure only)",
        variants=f"dense; unstructured {args.sparsity:.0%} layerwise magnitude; 2:4 on Conv2D/"
        f"Dense kernels; thinned: " + " and ".join(f"{f:.0%}" for f in args.channel_fractions)
        + " of the channels of each channel group (l1, layerwise), export.thin",
        runtimes=f"TF SavedModel (tf.saved_model.load().serve, intra-op {args.threads}, "
        f"inter-op {args.inter_op_threads}); TFLite (tf.lite.Interpreter, num_threads="
        f"{args.threads}, default delegates)",
        batch1_timing=f"median of {args.steps_batch1} calls after {4 * args.warmup} warm-up "
        f"calls, in {args.rounds} interleaved rounds",
        gpu=(f"present ({', '.join(gpus)}) but not measured: TensorRT / cuSPARSELt rows are "
             f"not implemented" if gpus else "none on this machine: TensorRT / cuSPARSELt "
             "(the only way 2:4 could run faster) not measured"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or tmp
        os.makedirs(folder, exist_ok=True)
        for name in args.models:
            results[name] = result = measure(name, args, folder)
            print(f"\n## {name} (input {'x'.join(map(str, result['shape']))}; "
                  f"{result['seconds']:.0f} s, of which timing {result['timing_seconds']:.0f} s)\n")
            print(table(result["rows"], HEADER))
            print()
            for what, diff, scale in result["checks"]:
                print(f"- {what}: max |diff| {diff:.1e} (outputs up to {scale:.1e})")
            for row, ops in result["sparse_ops"].items():
                densify = ops.get("DENSIFY", 0)
                print(f"- {row}: {densify} DENSIFY op(s) in the file"
                      + (" (the sparse weights are expanded to dense tensors when the "
                         "interpreter prepares the graph, and dense kernels run)"
                         if densify else f"; ops {sorted(ops)}"))
            if result["sparse_ops"]:
                print("- XNNPACK's sparse inference (Fast Sparse ConvNets) would need a graph of "
                      "1x1 convs and 3x3/5x5 depthwise convs behind a 3x3 stride-2 stem with "
                      "padding 1 (ResNet-20's 3x3 convs and MobileNetV2's explicit PAD ops do "
                      "not qualify), and runs on x86 only on pre-AVX CPUs (google/XNNPACK#3170); "
                      "this CPU has AVX-512")
            print(flush=True)
    all_goals = [row for result in results.values() for row in result["goal_rows"]]
    print("## thinned: speedup over dense vs MAC reduction (goal: ratio >= "
          f"{GOAL})\n")
    print(table(all_goals, ["model", "variant", "runtime", "batch", "speedup", "MAC reduction",
                            "ratio", "goal"]))
    load = os.getloadavg()[0]
    print(f"\nload average at the end {load:.1f}")


if __name__ == "__main__":
    main()
