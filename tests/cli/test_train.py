import json
import os

import numpy as np
import pytest

from tests.cli.train_process import TINY, run_train
from tests.conftest import needs_fashion_mnist

def _train(*args):
    return run_train(*args, timeout=600)


@needs_fashion_mnist
@pytest.mark.slow
def test_main_job_runs_resumes_refuses_other_config_and_exports(tmp_path):
    workdir = str(tmp_path / "run")
    args = ["--gin_file=gin_configs/soft_iep.gin", f"--workdir={workdir}", *TINY]
    first = _train(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "[soft_lr] cycle 2/2" in first.stdout and "exported ticket" in first.stdout
    metrics = [json.load(open(os.path.join(workdir, f"round_{i:02d}", "metrics.json")))
               for i in (0, 1)]
    assert metrics[1]["remaining_fraction"] == pytest.approx(0.3, abs=0.01)
    assert os.path.exists(os.path.join(workdir, "ticket", "ticket.npz"))
    assert os.path.isdir(os.path.join(workdir, "ticket", "saved_model"))
    assert os.listdir(os.path.join(workdir, "tensorboard"))

    # the same command again: every round is complete, nothing is trained, same result
    again = _train(*args)
    assert again.returncode == 0 and "Epoch" not in again.stdout
    assert "continuing" in again.stdout

    # another config in the same workdir: refused in one line, earlier rounds intact
    other = _train(*args, "--gin_bindings=EdgePopupSearch.variant='hard_lr'")
    assert other.returncode == 1
    assert other.stderr.strip().splitlines()[-1].startswith("error: workdir")
    assert os.path.exists(os.path.join(workdir, "round_01", "metrics.json"))


def test_bad_binding_is_one_readable_line(tmp_path):
    result = _train("--gin_file=gin_configs/soft_iep.gin", f"--workdir={tmp_path}",
                    "--gin_bindings=TrainingRecipe.learning_rat=0.1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: TrainingRecipe has no parameter 'learning_rat'; did you mean "
        "'TrainingRecipe.learning_rate'?")


def test_sparsity_out_of_range_is_one_readable_line(tmp_path):
    result = _train("--gin_file=gin_configs/soft_iep.gin", f"--workdir={tmp_path}",
                    "--gin_bindings=EdgePopupSearch.target_remaining=1.5")
    assert result.returncode == 1
    assert "target_remaining must be in [0, 1], got 1.5" in result.stderr.strip().splitlines()[-1]
