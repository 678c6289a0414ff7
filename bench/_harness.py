"""What every benchmark in bench/ shares: thread settings, device detection, the settings
banner, and interleaved timing of training steps (medians, never means).

Import it first (before TensorFlow runs any op): `configure(args)` sets the thread pools, which
TensorFlow accepts only before its runtime starts.
"""
import os
import platform
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import tensorflow as tf  # noqa: E402


def add_common_arguments(parser, steps=20, warmup=3, rounds=10):
    """--quick, thread counts, timed steps, warm-up steps, interleaving rounds."""
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of under two minutes (smaller settings, printed)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="intra-op threads (TF and PyTorch alike); default: all CPUs")
    parser.add_argument("--inter-op-threads", type=int, default=1,
                        help="inter-op threads (TF and PyTorch alike); default 1")
    parser.add_argument("--steps", type=int, default=steps,
                        help="timed steps per configuration (at least 20)")
    parser.add_argument("--warmup", type=int, default=warmup,
                        help="untimed steps per configuration after tracing/compilation")
    parser.add_argument("--rounds", type=int, default=rounds,
                        help="the timed steps are split into this many rounds that alternate "
                             "between the configurations compared, so that load from other "
                             "processes hits all of them alike")
    return parser


def configure(args):
    """Thread pools for TF (and PyTorch if it is imported later, see torch_threads)."""
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)


def torch_threads(torch, args):
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.inter_op_threads)
    except RuntimeError:  # already set (or parallel work already started)
        pass


def gpu_names():
    return [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description():
    gpus = gpu_names()
    if gpus:
        return f"GPU ({', '.join(gpus)}); TF places the steps there"
    return f"CPU only ({cpu_name()}, {os.cpu_count()} logical CPUs)"


def print_settings(title, args, **settings):
    import keras

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {title}")
    print(f"device: {device_description()}")
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
          f"{platform.python_version()}, {platform.platform()}")
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        print(f"PyTorch {torch.__version__} (threads {torch.get_num_threads()}, inter-op "
              f"{torch.get_num_interop_threads()})")
    print(f"threads: intra-op {args.threads}, inter-op {args.inter_op_threads}; load average "
          f"at start {load:.1f}")
    if hasattr(args, "steps"):
        print(f"timing: median of {args.steps} timed steps (in {args.rounds} interleaved "
              f"rounds) after {args.warmup} warm-up steps; quick={args.quick}")
    else:
        print(f"quick={args.quick}")
    for key, value in settings.items():
        print(f"{key}: {value}")
    print(flush=True)


class Timings:
    """Per-step wall and process-CPU seconds of one configuration."""

    def __init__(self):
        self.wall, self.cpu = [], []

    def median_wall(self):
        return statistics.median(self.wall)

    def median_cpu(self):
        return statistics.median(self.cpu)


def time_interleaved(steps, args):
    """steps: {name: zero-argument callable running one synchronous training step}.

    Each callable first runs `args.warmup` untimed steps; then `args.steps` timed steps each,
    in `args.rounds` rounds that visit the configurations in turn. Returns {name: Timings}.
    """
    if args.steps < 20:
        raise SystemExit("--steps must be at least 20 (medians of >= 20 timed steps)")
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    timings = {name: Timings() for name in steps}
    per_round = [args.steps // args.rounds + (i < args.steps % args.rounds)
                 for i in range(args.rounds)]
    for count in per_round:
        for name, step in steps.items():
            for _ in range(count):
                wall, cpu = time.perf_counter(), time.process_time()
                step()
                timings[name].cpu.append(time.process_time() - cpu)
                timings[name].wall.append(time.perf_counter() - wall)
    return timings


def keras_step(model, x, y):
    """One synchronous training step of a compiled Keras model on a fixed batch (the first
    call builds the optimizer and traces the step)."""
    def step():
        return model.train_on_batch(x, y)  # returns python floats: the step has finished
    return step


def peak_rss_mib():
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(rows, header):
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
