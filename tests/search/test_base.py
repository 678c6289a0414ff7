import json
import os

import pytest

from tests.analysis.workdir_runs import edge_popup_run
from tests.conftest import needs_fashion_mnist
from tf_lottery.search import rounds
from tf_lottery.training.fitting import HISTORY_FILE


@pytest.fixture(scope="module")
def edge_popup(tmp_path_factory):
    return edge_popup_run(tmp_path_factory)


@needs_fashion_mnist
def test_analysis_callback_records_land_in_the_round_metrics(edge_popup):
    """Experiment.analysis_callbacks: one fresh ActivationSparsityCallback per round, whose
    records (with edge-popup's own DyingRatioCallback's) end in metrics['analysis']."""
    assert len(edge_popup.callbacks) == 2 and edge_popup.callbacks[0] is not edge_popup.callbacks[1]
    for index, callback in enumerate(edge_popup.callbacks):
        metrics = rounds.load_metrics(edge_popup.workdir, index)
        assert metrics["num_rounds"] == 2
        (record,) = metrics["analysis"]  # one epoch per round
        assert callback.records == [{k: v for k, v in record.items()
                                     if k == "epoch" or k.startswith("activation_sparsity")}]
        assert record["dying_ratio"] == pytest.approx(metrics["dying_ratio"])
        # measured after the round's only epoch: the live model at the round's end agrees
        live = edge_popup.live_activation_sparsity[index]
        assert sorted(live) == ["fc", "re_lu"]
        for layer, fraction in live.items():
            assert record[f"activation_sparsity/{layer}"] == pytest.approx(fraction)
        assert 0 < record["activation_sparsity"] < 1
        with open(os.path.join(rounds.round_dir(edge_popup.workdir, index), HISTORY_FILE)) as f:
            assert json.load(f)[0]["activation_sparsity"] == pytest.approx(
                record["activation_sparsity"])
