"""The report's figures are labelled as a reader needs (tf_lottery/analysis/plots.py)."""
import numpy as np

from tf_lottery.analysis import plots


def _tick_labels(axis):
    axis.figure.canvas.draw()
    low, high = sorted(axis.get_xlim())
    return {label.get_text() for label, value in zip(axis.get_xticklabels(), axis.get_xticks())
            if low <= value <= high}


def test_a_long_remaining_axis_is_labelled_beyond_the_powers_of_ten():
    figure, (axis,) = plots._figure()
    remaining = 100 * 0.8 ** np.arange(15)  # 15 IMP rounds: 100% .. 4.4%
    axis.plot(remaining, np.linspace(90, 80, 15))
    plots._remaining_axis(axis)
    assert {"100", "50", "20", "10", "5"} <= _tick_labels(axis)


def test_the_accuracy_plot_shows_at_least_ten_points_of_accuracy():
    figure, (axis,) = plots._figure()
    axis.plot([100, 50], [88.1, 88.9])
    plots._at_least_span(axis, plots.ACCURACY_MIN_SPAN, lower=0.0, upper=100.0)
    low, high = axis.get_ylim()
    assert high - low >= 10 and low <= 88.1 and high >= 88.9 and high <= 100


def test_identical_series_are_drawn_once_under_both_names():
    points = [(1, 0.3), (2, 0.5)]
    merged = plots._merged_series({"dying_ratio": points, "apparent_dying_ratio": list(points),
                                   "other": [(1, 0.1)]})
    assert merged == {"apparent_dying_ratio = dying_ratio": points, "other": [(1, 0.1)]}


def test_a_similarity_figure_without_distances_shows_the_mask_overlap_alone(tmp_path):
    path = plots.similarity_plot("soft iEP", ["round_00", "round_01", "init"], None,
                                 np.array([[1.0, 0.5], [0.5, 1.0]]), str(tmp_path / "s.png"))
    from matplotlib.image import imread

    height, width = imread(path).shape[:2]
    assert width < 700  # one 5.5-inch panel at 100 dpi, not the two-panel 1100 pixels
