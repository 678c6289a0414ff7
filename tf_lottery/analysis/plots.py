"""Figures of runs read from their workdirs (analysis/workdir.py), drawn with matplotlib's
object API on the Agg canvas (no pyplot, so the caller's backend is left alone).

Each function takes `runs`, a list of (label, Workdir), or one run, writes one PNG and returns its
path, or returns None when the runs hold nothing to draw (the caller says what is missing).
"""
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import (FixedLocator, FuncFormatter, LogLocator, MaxNLocator,
                               NullFormatter)


ACCURACY_MIN_SPAN = 10.0  # percentage points: the least y-range of the accuracy plot
# analysis records whose values are fractions: drawn in % as every other plot here
_FRACTION_NAMES = ("ratio", "fraction", "sparsity", "density")


def _figure(columns=1, width=6.0, height=4.5):
    figure = Figure(figsize=(width * columns, height), constrained_layout=True)
    FigureCanvasAgg(figure)
    return figure, [figure.add_subplot(1, columns, i + 1) for i in range(columns)]


def _save(figure, path):
    figure.savefig(path, dpi=100)
    return path


def _percent(fraction):
    return 100.0 * float(fraction)


def _remaining_axis(axis):
    """Remaining weights in % on a log axis that decreases to the right (sparser to the right),
    ticked at the plotted values when there are few of them, else at 1-2-5 steps of every decade
    (100, 50, 20, 10, 5, ...: a log axis ticks only powers of ten by default, which labels a
    run from 100% to 10% with "100" alone)."""
    axis.set_xscale("log")
    values = sorted({round(float(x), 6) for line in axis.get_lines() for x in line.get_xdata()})
    if 0 < len(values) <= 12:
        axis.xaxis.set_major_locator(FixedLocator(values))
    else:
        axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.invert_xaxis()
    axis.set_xlabel("remaining weights (%)")
    axis.grid(True, which="both", alpha=0.3)


def _series(workdir, key):
    """[(remaining %, value)] of the complete rounds whose metrics hold a number under `key`."""
    return [(_percent(r.get("remaining_fraction")), float(r.get(key)))
            for r in workdir.complete_rounds
            if isinstance(r.get(key), (int, float)) and r.get("remaining_fraction") is not None]


def _plot_series(axis, points, scale=1.0, **style):
    if points:
        x, y = zip(*points)
        axis.plot(x, np.asarray(y) * scale, **style)
    return bool(points)


def _at_least_span(axis, span, lower=None, upper=None):
    """Widen the y-range around its data to at least `span` units (within [lower, upper]), so
    that a fraction of a point does not fill the whole height of a plot."""
    low, high = axis.get_ylim()
    if high - low >= span:
        return
    middle = (low + high) / 2
    low, high = middle - span / 2, middle + span / 2
    if lower is not None and low < lower:
        low, high = lower, lower + span
    if upper is not None and high > upper:
        low, high = upper - span, upper
    axis.set_ylim(low, high)


def _finish_remaining_plot(drawn, figure, axis, ylabel, title, path, min_span=None):
    """Label a plot against remaining weights and save it; None when nothing was drawn.
    `min_span`: the least y-range shown, in the plot's units (percentage points)."""
    if not drawn:
        return None
    if min_span:
        _at_least_span(axis, min_span, lower=0.0, upper=100.0)
    _remaining_axis(axis)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize="small")
    return _save(figure, path)


def accuracy_plot(runs, path):
    """Test accuracy vs remaining weights: one line per run, its controls (control_test_accuracy),
    retrained tickets (retrained_test_accuracy) and binary tickets (ticket_test_accuracy, where
    the search's network is not its ticket) dashed, dotted and dash-dotted in the same colour."""
    figure, (axis,) = _figure()
    drawn = False
    for i, (label, workdir) in enumerate(runs):
        color = f"C{i % 10}"
        drawn |= _plot_series(axis, _series(workdir, "test_accuracy"), 100, color=color,
                              marker="o", label=label)
        controls = {r.get("control") for r in workdir.complete_rounds if r.get("control")}
        name = "/".join(sorted(controls)) or "control"
        _plot_series(axis, _series(workdir, "control_test_accuracy"), 100, color=color,
                     marker="s", linestyle="--", label=f"{label}: {name} control")
        _plot_series(axis, _series(workdir, "retrained_test_accuracy"), 100, color=color,
                     marker="^", linestyle=":", label=f"{label}: retrained ticket")
        _plot_series(axis, _series(workdir, "ticket_test_accuracy"), 100, color=color,
                     marker="D", linestyle="-.", label=f"{label}: binary ticket")
    return _finish_remaining_plot(drawn, figure, axis, "test accuracy (%)",
                                  "Test accuracy vs remaining weights", path,
                                  min_span=ACCURACY_MIN_SPAN)


def _heatmap(axis, matrix, names, title, vmax, colorbar_label):
    image = axis.imshow(matrix, vmin=0.0, vmax=vmax, cmap="viridis")
    axis.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize="small")
    axis.set_yticks(range(len(names)), names, fontsize="small")
    axis.set_title(title)
    if len(names) <= 12:
        for (i, j), value in np.ndenumerate(matrix):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="x-small",
                      color="white" if value < 0.6 * vmax else "black")
    axis.figure.colorbar(image, ax=axis, label=colorbar_label, shrink=0.8)


def similarity_plot(label, names, distances, overlaps, path):
    """Angular distances between rounds with an init row/column (Maene Fig. 4), beside the
    overlap (IoU) of the rounds' ticket masks; `distances` None: the overlap alone (a
    strong-ticket search never changes the weights: every distance is 0, a panel without
    information)."""
    mask_names = [n for n in names if n != "init"]
    if distances is None:
        figure, (right,) = _figure(columns=1, width=5.5, height=5.0)
        _heatmap(right, overlaps, mask_names, "mask overlap |m1∧m2| / |m1∨m2|", 1.0, "IoU")
        figure.suptitle(f"{label} (weights never trained: no angular distances)")
        return _save(figure, path)
    figure, (left, right) = _figure(columns=2, width=5.5, height=5.0)
    vmax = max(1.0, float(np.max(distances)))
    _heatmap(left, distances, names, "angular distance 2·∠/π", vmax,
             "distance (0 = parallel, 1 = orthogonal)")
    _heatmap(right, overlaps, mask_names, "mask overlap |m1∧m2| / |m1∨m2|", 1.0, "IoU")
    figure.suptitle(label)
    return _save(figure, path)


LMC_KINDS = (("lmc", "-", "o", ""), ("lmc_rounds", "--", "s", ": successive rounds"))


def lmc_plot(runs, path):
    """Left: error along the linear path of every round with metrics['lmc'] (solid: e.g. two
    copies of the round) or metrics['lmc_rounds'] (dashed: the previous round to this one);
    right: the error barriers against the round's remaining weights."""
    figure, (curves, barriers) = _figure(columns=2)
    drawn = False
    for i, (label, workdir) in enumerate(runs):
        for key, linestyle, marker, kind in LMC_KINDS:
            measured = [r for r in workdir.complete_rounds if r.get(key)]
            for j, r in enumerate(measured):
                lmc = r.get(key)
                shade = 0.35 + 0.65 * (j + 1) / len(measured)
                between = lmc.get("between")
                ends = f" {between[0]}→{between[1]}" if between else ""
                remaining = _percent(r.get("remaining_fraction"))
                curves.plot(lmc["alphas"], 100 * np.asarray(lmc["errors"]), color=f"C{i % 10}",
                            alpha=shade, marker=".", linestyle=linestyle,
                            label=f"{label} {r.name}{ends} ({remaining:.1f}%)")
            points = [(_percent(r.get("remaining_fraction")), r.get(key)["barrier"])
                      for r in measured]
            drawn |= _plot_series(barriers, points, 100, color=f"C{i % 10}", marker=marker,
                                  linestyle=linestyle, label=f"{label}{kind}")
    if not drawn:
        return None
    curves.set_xlabel("interpolation α")
    curves.set_ylabel("test error (%)")
    curves.set_title("Linear interpolation")
    curves.legend(fontsize="x-small")
    _remaining_axis(barriers)
    barriers.set_ylabel("error barrier (%)")
    barriers.set_title("Error barrier vs remaining weights")
    barriers.legend(fontsize="small")
    return _save(figure, path)


def dying_plot(runs, path):
    """Dying ratio (edge-popup Eq. 2) against remaining weights; hard iEP's apparent ratio within
    its search space dashed where it differs."""
    figure, (axis,) = _figure()
    drawn = False
    for i, (label, workdir) in enumerate(runs):
        dying = _series(workdir, "dying_ratio")
        drawn |= _plot_series(axis, dying, 100, color=f"C{i % 10}", marker="o", label=label)
        apparent = _series(workdir, "apparent_dying_ratio")
        if apparent and not np.allclose([v for _, v in apparent], [v for _, v in dying]):
            _plot_series(axis, apparent, 100, color=f"C{i % 10}", marker="s", linestyle="--",
                         label=f"{label}: apparent (within the search space)")
    return _finish_remaining_plot(drawn, figure, axis, "dying ratio (%)",
                                  "Edges never selected vs remaining weights", path)


def activation_sparsity_plot(label, workdir, path):
    """Fraction of zero activations per ReLU layer, one line per round."""
    per_round = [(r, workdir.activation_sparsity(r)) for r in workdir.complete_rounds]
    per_round = [(r, values) for r, values in per_round if values]
    if not per_round:
        return None
    layers = list(dict.fromkeys(name for _, values in per_round for name in values))
    figure, (axis,) = _figure(width=max(6.0, 0.6 * len(layers)))
    for j, (r, values) in enumerate(per_round):
        y = [100 * values[name] if name in values else np.nan for name in layers]
        axis.plot(range(len(layers)), y, marker="o", color=f"C{j % 10}",
                  label=f"{r.name} ({_percent(r.get('remaining_fraction')):.1f}% remaining)")
    axis.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize="small")
    axis.set_ylabel("zero activations (%)")
    axis.set_ylim(0, 100)
    axis.set_title(f"Activation sparsity per layer: {label}")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize="small")
    return _save(figure, path)


def _merged_series(series):
    """{title: points} with series of identical points drawn once, their names joined by ' = '
    (soft iEP's dying_ratio and apparent_dying_ratio are the same number: the search space is
    the whole network)."""
    merged = {}
    for name, points in sorted(series.items()):
        same = next((title for title, other in merged.items() if other == points), None)
        if same is None:
            merged[name] = points
        else:
            merged[f"{same} = {name}"] = merged.pop(same)
    return merged


def analysis_plot(label, workdir, path):
    """Every scalar the analysis callbacks recorded (metrics['analysis'], per-layer entries left
    out) against the epoch of the whole search, with round boundaries (dotted, in the legend);
    fractions (ratios, sparsities, densities) in %, identical series drawn once."""
    series = {}
    boundaries = []
    for r in workdir.complete_rounds:
        records = r.get("analysis") or []
        start = r.get("search_epochs", 0) - r.get("epochs", 0)
        boundaries.append(start)
        for record in records:
            for name, value in record.items():
                if name != "epoch" and "/" not in name and isinstance(value, (int, float)):
                    series.setdefault(name, []).append((start + record["epoch"] + 1, value))
    if not series:
        return None
    series = _merged_series(series)
    figure, axes = _figure(columns=len(series), width=4.5, height=3.5)
    for axis, (title, points) in zip(axes, series.items()):
        x, y = zip(*points)
        percent = any(part in title for part in _FRACTION_NAMES) and all(
            0.0 <= v <= 1.0 for v in y)
        axis.plot(x, np.asarray(y) * (100.0 if percent else 1.0), marker="o", label="measured")
        for i, start in enumerate(boundaries[1:]):
            axis.axvline(start + 0.5, color="gray", linestyle=":", linewidth=1,
                         label="new round" if i == 0 else None)
        if percent:
            axis.set_ylabel("%")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch of the search")
        axis.set_title(title, fontsize="medium")
        axis.grid(True, alpha=0.3)
        if len(boundaries) > 1:
            axis.legend(fontsize="small")
    figure.suptitle(f"Measured during training: {label}")
    return _save(figure, path)
