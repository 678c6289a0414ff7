"""What bin/train and bin/report do before anything imports TensorFlow.

* Under a Python without tf_lottery's dependencies (the system Python instead of .venv), one
  line saying how to run the script, instead of a traceback ending in "No module named 'gin'".
* TensorFlow's C++ start-up lines (oneDNN, CUDA probing, CPU instructions) are not shown:
  TF_CPP_MIN_LOG_LEVEL=2, and stderr is pointed at /dev/null while TensorFlow loads and looks
  for devices (some of those lines are written before any log level applies). `--tf_logs` or
  TF_LOTTERY_TF_LOGS=1 shows them again.
"""
import importlib.util
import os
import sys

DEPENDENCIES = ("absl", "gin", "numpy", "keras", "tensorflow")
SHOW_TF_LOGS_FLAG = "--tf_logs"
SHOW_TF_LOGS_ENV = "TF_LOTTERY_TF_LOGS"


def missing_dependency():
    """The first dependency this Python cannot import (found without importing it), or None."""
    return next((name for name in DEPENDENCIES if importlib.util.find_spec(name) is None), None)


def check_python(script):
    """Exit with one line on stderr when this Python lacks tf_lottery's dependencies."""
    missing = missing_dependency()
    if missing:
        print(f"error: this Python ({sys.executable}) has no module {missing!r}: run "
              f"`make train` (it sets up .venv first) or `.venv/bin/python bin/{script} ...` "
              f"after `bin/setup`", file=sys.stderr)
        sys.exit(1)


def wants_tf_logs(argv):
    return (any(arg in (SHOW_TF_LOGS_FLAG, f"{SHOW_TF_LOGS_FLAG}=true") for arg in argv[1:])
            or os.environ.get(SHOW_TF_LOGS_ENV, "") not in ("", "0"))


def quiet_tensorflow_start(argv):
    """Import TensorFlow and probe its devices with its C++ start-up lines hidden (see above)."""
    if wants_tf_logs(argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA probing prints here, not at the first op
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def prepare(script):
    """Both of the above, for bin/<script>."""
    check_python(script)
    quiet_tensorflow_start(sys.argv)
