"""bin/train in a subprocess with a tiny soft iEP run on the offline data, for the CLI tests."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIN = "--gin_file=gin_configs/soft_iep.gin"
TINY = ["--gin_bindings=load_dataset.train_examples=512",
        "--gin_bindings=load_dataset.test_examples=256",
        "--gin_bindings=load_dataset.batch_size=64",
        "--gin_bindings=TrainingRecipe.epochs=1",
        "--gin_bindings=EdgePopupSearch.cycles=2",
        "--gin_bindings=build_model.plan=[8, 'pool']",
        "--gin_bindings=build_model.dense_units=[16]"]


def run_train(*args, timeout=900):
    """The finished bin/train process (stdout and stderr captured as text)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "bin", "train"), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
