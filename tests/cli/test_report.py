import json
import os
import shutil
import subprocess
import sys

import pytest
from matplotlib import image as mpimg

from tests.analysis.workdir_runs import edge_popup, magnitude  # noqa: F401 (fixtures)
from tests.conftest import needs_fashion_mnist
from tf_lottery.analysis.workdir import Workdir
from tf_lottery.cli.report import REPORT_FILE, run_labels, write_report
from tf_lottery.errors import DataError
from tf_lottery.export.sizes import human_bytes
from tf_lottery.search import rounds

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_readable_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, path
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] >= 200 and pixels.shape[1] >= 200, path
    assert pixels[..., :3].std() > 0.01, f"{path} is blank"


def _rows(report, label):
    return [line for line in report.splitlines() if line.startswith(f"| {label} | round_")]


def _report(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, os.path.join(ROOT, "bin", "report"), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@needs_fashion_mnist
def test_report_of_two_finished_runs(edge_popup, magnitude, tmp_path):
    # an IMP-style control accuracy in the weak run's metrics: drawn and tabulated too
    weak = shutil.copytree(magnitude.workdir, tmp_path / "weak")
    metrics_path = weak / "round_01" / rounds.METRICS_FILE
    metrics = json.loads(metrics_path.read_text())
    metrics.update(control="reinit", control_test_accuracy=0.125,
                   lmc_rounds=dict(metrics["lmc"], barrier=0.0625))
    rounds.write_json(str(metrics_path), metrics)
    rounds.seal(str(metrics_path.parent))  # the round as if it had measured that itself

    out = tmp_path / "out"
    paths = write_report([edge_popup.workdir, str(weak)], str(out))
    names = sorted(os.path.basename(p) for p in paths)
    assert names == sorted([
        REPORT_FILE, "accuracy.png", "similarity_edge_popup_soft_lr.png",
        "similarity_magnitude_rounds.png", "lmc.png", "dying_ratio.png",
        "activation_sparsity_edge_popup_soft_lr.png", "analysis_edge_popup_soft_lr.png"])
    for path in paths[1:]:
        _assert_readable_png(path)

    report = (out / REPORT_FILE).read_text()
    ep_rows, weak_rows = _rows(report, "edge_popup/soft_lr"), _rows(report, "magnitude_rounds")
    assert len(ep_rows) == 2 and len(weak_rows) == 2
    assert all(row.endswith("| complete |") for row in ep_rows + weak_rows)
    barrier = json.loads(metrics_path.read_text())["lmc"]["barrier"]
    assert "| 12.50% |" in weak_rows[1] and f"| {100 * barrier:.2f}% | 6.25% |" in weak_rows[1]
    ep_final = edge_popup.results[-1]
    assert f"| {100 * ep_final['test_accuracy']:.2f}% |" in ep_rows[1]
    assert f"| {100 * ep_final['dying_ratio']:.2f}% |" in ep_rows[1]
    # the folded weights' gzip'd size, measured by the round loop: pruning shrinks it
    assert f"| {human_bytes(ep_final['weights_gzip_bytes'])} |" in ep_rows[1]
    dense, pruned = magnitude.results[0], magnitude.results[1]
    assert dense["weights_bytes"] == pruned["weights_bytes"]
    assert pruned["weights_gzip_bytes"] < 0.8 * dense["weights_gzip_bytes"]
    # each run says which measurements it lacks, and only those
    ep_section = report.split("### edge_popup/soft_lr (")[1].split("###")[0]
    weak_section = report.split("### magnitude_rounds (")[1].split("###")[0]
    assert "metrics['lmc']" in ep_section and "dying_ratio" not in ep_section
    assert "all 0" in ep_section  # a strong ticket: angular distances say nothing
    assert "no dying_ratio" in weak_section and "metrics['lmc']" not in weak_section
    assert "no activation sparsity" in weak_section and "control" not in weak_section
    assert "![Linear mode connectivity](lmc.png)" in report


@needs_fashion_mnist
def test_bin_report_on_a_partly_finished_workdir(edge_popup, tmp_path):
    partial = shutil.copytree(edge_popup.workdir, tmp_path / "partial")
    os.remove(partial / "round_01" / rounds.METRICS_FILE)
    out = tmp_path / "out"
    result = _report(f"--workdir={partial}", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    report = (out / REPORT_FILE).read_text()
    rows = _rows(report, "edge_popup/soft_lr")
    assert len(rows) == 2 and rows[0].endswith("| complete |")
    assert rows[1].endswith("| round_01 has no metrics.json: unfinished |")
    assert "- round_01 has no metrics.json: unfinished" in report
    assert "1 of 2 rounds complete (unfinished)" in report
    for name in ("accuracy.png", "similarity_edge_popup_soft_lr.png", "dying_ratio.png"):
        _assert_readable_png(out / name)


def test_bin_report_refuses_a_missing_workdir_in_one_line(tmp_path):
    result = _report(f"--workdir={tmp_path / 'nowhere'}", f"--out={tmp_path / 'out'}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: workdir {tmp_path / 'nowhere'} does not exist or is not a directory")
    assert not (tmp_path / "out").exists()


def test_empty_workdir_gives_a_report_that_says_so(tmp_path):
    (tmp_path / "run").mkdir()
    paths = write_report([str(tmp_path / "run")], str(tmp_path / "out"))
    assert [os.path.basename(p) for p in paths] == [REPORT_FILE]
    report = (tmp_path / "out" / REPORT_FILE).read_text()
    assert "- no round_NN directory: no round has started" in report
    assert "- no complete round: nothing to plot" in report
    with pytest.raises(DataError):
        write_report([str(tmp_path / "nowhere")], str(tmp_path / "out"))


def test_labels_name_the_directory_only_when_two_runs_clash(tmp_path):
    for name, variant in (("a", "soft_lr"), ("b", "soft_lr"), ("c", "hard_lr")):
        rounds.write_json(str(tmp_path / name / "round_00" / rounds.METRICS_FILE),
                          {"algorithm": "edge_popup", "variant": variant})
    workdirs = [Workdir(str(tmp_path / name)) for name in "abc"]
    assert run_labels(workdirs) == ["edge_popup/soft_lr (a)", "edge_popup/soft_lr (b)",
                                    "edge_popup/hard_lr"]


def test_binary_ticket_accuracy_has_its_own_column(tmp_path):
    # continuous sparsification: test_accuracy is the soft mask's, ticket_test_accuracy b(s)'s
    rounds.write_json(str(tmp_path / "cs" / "round_00" / rounds.METRICS_FILE), {
        "algorithm": "continuous_sparsification", "remaining_fraction": 0.5,
        "macs_fraction": 0.25, "test_accuracy": 0.75, "ticket_test_accuracy": 0.125, "retrained_test_accuracy": 0.5,
        "search_epochs": 1})
    write_report([str(tmp_path / "cs")], str(tmp_path / "out"))
    report = (tmp_path / "out" / REPORT_FILE).read_text()
    header = next(line for line in report.splitlines() if line.startswith("| run |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    row = [c.strip() for c in _rows(report, "continuous_sparsification")[0].strip("|").split("|")]
    assert len(row) == len(columns)
    assert dict(zip(columns, row))["test accuracy"] == "75.00%"
    assert dict(zip(columns, row))["binary ticket accuracy"] == "12.50%"
    assert dict(zip(columns, row))["retrained accuracy"] == "50.00%"
    assert dict(zip(columns, row))["MACs"] == "25.00%"  # macs_fraction of the round


def test_sizes_of_weights_and_of_the_exported_ticket(tmp_path):
    rounds.write_json(str(tmp_path / "imp" / "round_00" / rounds.METRICS_FILE), {
        "algorithm": "imp", "remaining_fraction": 0.1, "test_accuracy": 0.5,
        "weights_bytes": 4_000_000, "weights_gzip_bytes": 1_234_567, "search_epochs": 1})
    rounds.write_json(str(tmp_path / "imp" / "ticket" / "export_sizes.json"), {
        "saved_model": {"bytes": 4_100_000, "gzip_bytes": 1_300_000},
        "ticket": {"bytes": 900, "gzip_bytes": 512}})
    rounds.write_json(str(tmp_path / "gmp" / "round_00" / rounds.METRICS_FILE),
                      {"algorithm": "gmp", "remaining_fraction": 0.5})  # before sizes existed
    write_report([str(tmp_path / "imp"), str(tmp_path / "gmp")], str(tmp_path / "out"))
    report = (tmp_path / "out" / REPORT_FILE).read_text()
    header = next(line for line in report.splitlines() if line.startswith("| run |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    for label, size in (("imp", "1.2 MB"), ("gmp", "—")):
        row = [c.strip() for c in _rows(report, label)[0].strip("|").split("|")]
        assert len(row) == len(columns)
        assert dict(zip(columns, row))["weights gzip'd"] == size
    exported = report.split("## Exported tickets")[1].split("##")[0]
    assert [line for line in exported.splitlines() if line.startswith("| imp")] == [
        "| imp | saved_model | 4.1 MB | 1.3 MB |", "| imp | ticket | 900 B | 512 B |"]
    assert "| gmp |" not in exported

    # an unreadable sizes file is a note of its run, not a failed report
    (tmp_path / "imp" / "ticket" / "export_sizes.json").write_text("{not json")
    write_report([str(tmp_path / "imp")], str(tmp_path / "out"))
    report = (tmp_path / "out" / REPORT_FILE).read_text()
    assert "## Exported tickets" not in report
    assert "- no export sizes: cannot read" in report


def test_an_unfinished_round_row_has_every_column(tmp_path):
    (tmp_path / "run" / "round_00").mkdir(parents=True)
    write_report([str(tmp_path / "run")], str(tmp_path / "out"))
    report = (tmp_path / "out" / REPORT_FILE).read_text()
    header = next(line for line in report.splitlines() if line.startswith("| run |"))
    row = _rows(report, "run")[0]
    assert row.count("|") == header.count("|") and row.endswith("unfinished |")
