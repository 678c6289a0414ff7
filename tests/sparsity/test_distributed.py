import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_masks_under_a_mirrored_strategy_equal_a_one_device_run_on_every_replica(tmp_path):
    out = tmp_path / "masks.npz"
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "tests.sparsity.distributed_gmp", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = np.load(out)
    assert int(result["replicas_mirrored"]) == 2
    for name in ("fc", "out"):
        single = result[f"one_device/{name}"]
        assert 0 < single.mean() < 1  # pruned, not trivially equal
        np.testing.assert_array_equal(result[f"mirrored/{name}"], single, err_msg=name)
        for replica in range(2):
            np.testing.assert_array_equal(result[f"mirrored/{name}/replica{replica}"], single)
    # the dense gradient reached the updater summed over replicas: the one-device gradient
    np.testing.assert_allclose(result["mirrored/gradient"], result["one_device/gradient"],
                               rtol=1e-4, atol=1e-6)
    assert np.any(result["one_device/gradient"] != 0)
