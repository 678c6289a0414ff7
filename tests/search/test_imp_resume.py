import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import needs_fashion_mnist
from tests.search import imp_resume_run
from tf_lottery.search import rounds

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_subprocess(workdir, log, *kill):
    env = dict(os.environ, PYTHONPATH=REPOSITORY, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "tests.search.imp_resume_run", str(workdir),
                           str(log), *map(str, kill)], cwd=REPOSITORY, env=env,
                          capture_output=True, text=True, timeout=300)


def _trained_epochs(log):
    with open(log) as f:
        return [tuple(map(int, line.split())) for line in f]


@needs_fashion_mnist
@pytest.mark.slow
def test_killed_run_resumes_mid_round_and_finds_the_same_tickets(tmp_path):
    workdir, log = tmp_path / "killed", tmp_path / "killed.log"
    # 3 rounds; round 0 trains 3 epochs (saving θ_k after epoch 1), rounds 1-2 the last 2
    killed = _run_subprocess(workdir, log, 1, 1)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert rounds.completed_rounds(str(workdir)) == [0]
    assert _trained_epochs(log) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    checkpoints = os.listdir(workdir / "round_01" / "checkpoints")
    assert any(name.startswith("ckpt-1") for name in checkpoints)
    assert not any(name.startswith("ckpt-2") for name in checkpoints)
    round0 = (workdir / "round_00" / rounds.METRICS_FILE).read_text()

    resumed = _run_subprocess(workdir, log)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # the rerun skipped round 0 and went on from round 1's epoch-1 checkpoint
    assert _trained_epochs(log)[5:] == [(1, 1), (2, 0), (2, 1)]
    assert (workdir / "round_00" / rounds.METRICS_FILE).read_text() == round0
    assert rounds.completed_rounds(str(workdir)) == [0, 1, 2]

    uninterrupted = tmp_path / "uninterrupted"
    imp_resume_run.run(str(uninterrupted))
    for index in range(3):
        expected = rounds.load_round_masks(str(uninterrupted), index)
        found = rounds.load_round_masks(str(workdir), index)
        assert set(found) == set(expected)
        for name in expected:
            np.testing.assert_array_equal(found[name], expected[name], err_msg=f"{index} {name}")
    a, b = (rounds.load_metrics(str(d), 2) for d in (workdir, uninterrupted))
    assert a["remaining_weights"] == b["remaining_weights"]
    assert a["test_accuracy"] == pytest.approx(b["test_accuracy"])
