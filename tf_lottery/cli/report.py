"""bin/report: plots and a markdown table from the workdirs of finished or partly finished runs.

    bin/report --workdir=runs/soft_iep [--workdir=runs/imp ...] --out=reports/x

Writes into --out: report.md and PNGs. report.md holds one table row per round of every run
(where a search's network is not its ticket, as continuous sparsification's soft mask, "test
accuracy" is the network's and "binary ticket accuracy" the ticket's with the same weights, what
the exported model scores; "MACs" is the ticket's multiply-adds as a fraction of the dense
model's, analysis.flops; "weights gzip'd" the size after gzip of the folded float32 weights an
export holds, the round's weights_gzip_bytes, export.sizes: pruned zeros compress away), where a
workdir has ticket/export_sizes.json (written by bin/train's export) a table of the exported
artifacts' sizes raw and gzip'd, what each workdir lacks, and the figures: accuracy.png (test
accuracy vs remaining weights, one line per run, with controls and retrained tickets),
similarity_<run>.png (angular distances between rounds and the initialisation, Maene Fig. 4,
beside the overlap of their masks), lmc.png (interpolation curves and error barriers),
dying_ratio.png, activation_sparsity_<run>.png, analysis_<run>.png (what the analysis callbacks
measured during training). Nothing is trained or rebuilt: everything is read from
metrics.json, masks.npz, the .weights.h5 files and ticket/export_sizes.json (see
analysis/workdir.py for the metric keys read).
"""
import os
import re
import sys

from absl import flags

from tf_lottery.cli import run_app

flags.DEFINE_multi_string("workdir", [], "run directory (repeatable)")
flags.DEFINE_string("out", None, "directory for report.md and the PNG figures")
FLAGS = flags.FLAGS

REPORT_FILE = "report.md"


def run_labels(workdirs):
    """One label per workdir: algorithm[/variant], with the directory name where two clash."""
    labels = [w.label for w in workdirs]
    return [f"{label} ({w.name})" if labels.count(label) > 1 and label != w.name else label
            for label, w in zip(labels, workdirs)]


def _slug(label):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


def _percent(fraction):
    return f"{100 * fraction:.2f}%" if isinstance(fraction, (int, float)) else "—"


def _row(label, r):
    from tf_lottery.export.sizes import human_bytes

    if not r.complete:
        problem = r.problem.replace("|", "\\|")
        return f"| {label} | {r.name} |{' — |' * 11} {problem} |"
    lmc, lmc_rounds = r.get("lmc") or {}, r.get("lmc_rounds") or {}
    return (f"| {label} | {r.name} | {_percent(r.get('remaining_fraction'))} "
            f"| {_percent(r.get('macs_fraction'))} "
            f"| {human_bytes(r.get('weights_gzip_bytes'))} "
            f"| {_percent(r.get('test_accuracy'))} "
            f"| {_percent(r.get('ticket_test_accuracy'))} "
            f"| {_percent(r.get('control_test_accuracy'))} "
            f"| {_percent(r.get('retrained_test_accuracy'))} "
            f"| {_percent(r.get('dying_ratio'))} | {_percent(lmc.get('barrier'))} "
            f"| {_percent(lmc_rounds.get('barrier'))} "
            f"| {r.get('search_epochs', '—')} | complete |")


def _export_table(runs, notes):
    """Lines of the '## Exported tickets' table (each artifact's size raw and gzip'd, from
    ticket/export_sizes.json), or none when no workdir has that file; an unreadable file is
    a note of its run."""
    from tf_lottery.errors import DataError
    from tf_lottery.export.sizes import human_bytes

    rows = []
    for label, workdir in runs:
        try:
            sizes = workdir.export_sizes()
        except DataError as e:
            notes[label].append(f"no export sizes: {e}")
            continue
        for artifact, entry in sorted((sizes or {}).items()):
            rows.append(f"| {label} | {artifact} | {human_bytes(entry['bytes'])} "
                        f"| {human_bytes(entry['gzip_bytes'])} |")
    if not rows:
        return []
    return ["", "## Exported tickets", "", "| run | artifact | size | gzip'd |",
            "|---|---|---|---|", *rows]


def _missing_measurements(workdir):
    """Lines for the measurements no complete round of `workdir` holds."""
    complete = workdir.complete_rounds
    if not complete:
        return ["no complete round: nothing to plot"]
    has = lambda key: any(r.get(key) is not None for r in complete)  # noqa: E731
    lines = []
    if not (has("control_test_accuracy") or has("retrained_test_accuracy")):
        lines.append("no control_test_accuracy or retrained_test_accuracy in metrics: the "
                     "accuracy plot shows the tickets only")
    if not (has("lmc") or has("lmc_rounds")):
        lines.append("no round has metrics['lmc'] or ['lmc_rounds'] = {alphas, errors, barrier}: "
                     "no linear mode connectivity curves (nothing measured interpolations for "
                     "this run; IMPSearch.linear_connectivity does)")
    if not has("dying_ratio"):
        lines.append("no dying_ratio in metrics (edge-popup searches record it)")
    if not any(workdir.activation_sparsity(r) for r in complete):
        lines.append("no activation sparsity (metrics['activation_sparsity'] or "
                     "activation_sparsity/<layer> records in metrics['analysis'])")
    if not has("analysis"):
        lines.append("no metrics['analysis']: no analysis callback ran during training "
                     "(Experiment.analysis_callbacks)")
    return lines


def _similarity(label, workdir, out):
    """similarity_<run>.png, or the line saying why there is none; plus notes."""
    from tf_lottery.analysis import plots
    from tf_lottery.errors import DataError

    if not workdir.comparable_rounds():
        return None, ["no complete round with masks.npz and weights.weights.h5: no angular "
                      "distances"]
    try:
        names, distances = workdir.angular_distances()
        _, overlaps = workdir.mask_overlaps()
    except DataError as e:
        return None, [f"no angular distances: {e}"]
    notes = []
    if abs(distances).max() < 1e-6:  # drawn as a panel of zeros, it would only puzzle
        notes.append("angular distances between rounds and the initialisation are all 0: the "
                     "weights were never trained (a strong-ticket search keeps them at their "
                     "initialisation), so similarity_*.png shows the mask overlap alone")
        distances = None
    remaining = {r.name: r.get("remaining_fraction") for r in workdir.complete_rounds}
    shown = [f"{n} ({100 * remaining[n]:.3g}%)" if isinstance(remaining.get(n), (int, float))
             else n for n in names]
    path = os.path.join(out, f"similarity_{_slug(label)}.png")
    return plots.similarity_plot(label, shown, distances, overlaps, path), notes


def write_report(workdir_paths, out):
    """Read the workdirs, write report.md and the figures into `out`; returns the paths written.
    Raises DataError when a workdir does not exist."""
    from tf_lottery.analysis import plots
    from tf_lottery.analysis.workdir import Workdir

    workdirs = [Workdir(path) for path in workdir_paths]
    labels = run_labels(workdirs)
    runs = list(zip(labels, workdirs))
    os.makedirs(out, exist_ok=True)
    figures, notes = [], {label: [] for label in labels}

    def add(path, title):
        if path:
            figures.append((title, path))

    add(plots.accuracy_plot(runs, os.path.join(out, "accuracy.png")),
        "Test accuracy vs remaining weights")
    for label, workdir in runs:
        path, lines = _similarity(label, workdir, out)
        notes[label] += lines
        add(path, f"Angular distances and mask overlap: {label}")
    add(plots.lmc_plot(runs, os.path.join(out, "lmc.png")), "Linear mode connectivity")
    add(plots.dying_plot(runs, os.path.join(out, "dying_ratio.png")),
        "Dying ratio vs remaining weights")
    for label, workdir in runs:
        add(plots.activation_sparsity_plot(
            label, workdir, os.path.join(out, f"activation_sparsity_{_slug(label)}.png")),
            f"Activation sparsity per layer: {label}")
        add(plots.analysis_plot(label, workdir, os.path.join(out, f"analysis_{_slug(label)}.png")),
            f"Measured during training: {label}")

    lines = ["# tf_lottery report", ""]
    for label, workdir in runs:
        state = "finished" if workdir.finished else "unfinished"
        planned = f" of {workdir.num_rounds}" if workdir.num_rounds else ""
        lines.append(f"- **{label}**: `{workdir.path}` — {len(workdir.complete_rounds)}"
                     f"{planned} rounds complete ({state})")
    lines += ["", "## Rounds", "",
              "| run | round | remaining | MACs | weights gzip'd | test accuracy "
              "| binary ticket accuracy | control accuracy | retrained accuracy | dying ratio "
              "| LMC error barrier | barrier from previous round | search epochs | status |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, workdir in runs:
        lines += [_row(label, r) for r in workdir.rounds]
    lines += _export_table(runs, notes)
    lines += ["", "## What the workdirs lack", ""]
    for label, workdir in runs:
        lacking = workdir.lacks() + _missing_measurements(workdir) + notes[label]
        lines.append(f"### {label} (`{workdir.path}`)")
        lines += [f"- {line}" for line in lacking] or ["- nothing"]
        lines.append("")
    lines += ["## Figures", ""]
    for title, path in figures:
        lines += [f"### {title}", "", f"![{title}]({os.path.basename(path)})", ""]
    report = os.path.join(out, REPORT_FILE)
    with open(report, "w") as f:
        f.write("\n".join(lines))
    return [report] + [path for _, path in figures]


def main(argv):
    del argv
    from tf_lottery.errors import TfLotteryError

    if not FLAGS.workdir or not FLAGS.out:
        print("error: give --workdir (one or more) and --out", file=sys.stderr)
        return 1
    missing = [path for path in FLAGS.workdir if not os.path.isdir(path)]
    if missing:  # said before TensorFlow is imported
        print(f"error: workdir {missing[0]} does not exist or is not a directory", file=sys.stderr)
        return 1
    try:
        paths = write_report(FLAGS.workdir, FLAGS.out)
    except TfLotteryError as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"[tf_lottery] wrote {paths[0]} and {len(paths) - 1} figures in {FLAGS.out}")
    return 0


def run():
    run_app(main, __name__)


if __name__ == "__main__":
    run()
