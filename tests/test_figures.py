"""Figures a reader looks at instead of a table: nothing they need may fall off the edge."""

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg

from vitct.evaluation import figures

# The shipped configs' original_recipe variant changes ten settings, and a final model's
# curves are titled with all its overrides: lines far wider than the figure.
MANY_CHANGES = ", ".join(
    f"{key}=0.0"
    for key in (
        "label_smoothing",
        "drop_path",
        "warmup_epochs",
        "grad_clip",
        "pretrain_epochs",
        "cutmix",
        "tokenizer",
        "pooling",
        "lr_schedule",
        "select_best_epoch",
        "image_size",
        "patch_size",
    )
)


def _draw(monkeypatch, tmp_path, plot, *args, **kwargs):
    """The figure a plot function draws (and saves to a file)."""
    drawn = []
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, path: (drawn.append(fig), save(fig, path)))
    plot(*args, tmp_path / "figure.png", **kwargs)
    assert (tmp_path / "figure.png").stat().st_size > 0
    (fig,) = drawn
    return fig


def _texts_outside(fig) -> list[str]:
    """The texts (the titles and the drawn y tick labels) whose boxes leave the figure."""
    canvas = FigureCanvasAgg(fig)  # closing the figure took its own canvas away
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = canvas.get_width_height()
    texts = [fig._suptitle]
    for ax in fig.axes:
        low, high = sorted(ax.get_ylim())
        texts.append(ax.title)
        for tick in ax.yaxis.get_major_ticks():  # those outside the axis are not drawn
            if tick.label1.get_visible() and low <= tick.get_loc() <= high:
                texts.append(tick.label1)
    outside = []
    for text in texts:
        if text is None or not text.get_text():
            continue
        box = text.get_window_extent(renderer)
        if box.x0 < 0 or box.y0 < 0 or box.x1 > width or box.y1 > height:
            outside.append(text.get_text())
    return outside


def test_ablation_labels_stay_inside_the_figure_with_many_variants_and_sets(
    monkeypatch,
    tmp_path,
):
    # A label was once wider than tight_layout could make room for, and every label was cut
    # off. The bars are labelled with the variants' names now, one row of panels per set
    # scored on; the final recipe's own rows are no bars.
    variants = ["final", "no_pretraining", "no_conv_tokenizer_seq_pool", "original_recipe"]
    rows = []
    for scored_on in ("locked test", "external:scanner_b"):
        for k, variant in enumerate(variants):
            row = {"scored_on": scored_on, "variant": variant, "changes": MANY_CHANGES}
            for metric in ("accuracy", "mcc"):
                point = [np.nan, 2.0, -3.0, 10.0][k]
                row[f"{metric}_points"] = point
                row[f"{metric}_points_low"] = point - 4.0
                row[f"{metric}_points_high"] = point + 4.0
            rows.append(row)
    table = pd.DataFrame(rows)

    drawn = _draw(monkeypatch, tmp_path, figures.plot_ablation, table)

    assert _texts_outside(drawn) == []
    # Two sets x (accuracy, mcc); the panels share the labels of their row's first.
    labels = [[t.get_text() for t in ax.get_yticklabels()] for ax in drawn.axes[::2]]
    assert labels == [variants[1:]] * 2  # the final recipe left out
    titles = [ax.get_title() for ax in drawn.axes]
    assert titles == [
        "locked test: accuracy",
        "locked test: mcc",
        "external:scanner_b: accuracy",
        "external:scanner_b: mcc",
    ]


def test_training_curves_title_stays_inside_the_figure_with_many_overrides(monkeypatch, tmp_path):
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [0.7, 0.5, 0.4],
            "val_loss": [0.6, 0.5, 0.45],
            "train_accuracy": [0.6, 0.8, 0.9],
            "val_accuracy": [0.6, 0.7, 0.8],
            "val_mcc": [0.2, 0.4, 0.6],
        }
    )

    drawn = _draw(monkeypatch, tmp_path, figures.plot_history, history, title=MANY_CHANGES)

    assert _texts_outside(drawn) == []


def test_reliability_has_a_panel_per_set_with_both_curves_and_slices_counted(monkeypatch, tmp_path):
    sets = {
        "locked test": (
            [0, 1, 1, 0, 1],
            [0.01, 0.99, 0.97, 0.03, 0.98],  # before: overconfident
            [0.05, 0.95, 0.85, 0.15, 0.92],  # after temperature scaling
        ),
        "external:scanner_b": (np.array([1, 0]), np.array([0.6, 0.7]), np.array([0.52, 0.55])),
    }

    drawn = _draw(monkeypatch, tmp_path, figures.plot_reliability, sets, temperature=2.5)

    assert _texts_outside(drawn) == []
    curves, counts = drawn.axes[:2], drawn.axes[2:]  # a row of curves above a row of counts
    assert [ax.get_title() for ax in curves] == [
        "locked test (n = 5)",
        "external:scanner_b (n = 2)",
    ]
    diagonal, before, after = curves[0].get_lines()  # empty bins left out
    np.testing.assert_allclose(before.get_xdata(), [0.02, 0.98])
    np.testing.assert_allclose(before.get_ydata(), [0, 1])
    np.testing.assert_allclose(after.get_xdata(), [0.05, 0.15, 0.85, 0.935])
    np.testing.assert_allclose(after.get_ydata(), [0, 0, 1, 1])
    labels = [t.get_text() for t in curves[0].get_legend().get_texts()]
    assert labels[0] == "calibrated"
    assert labels[1].startswith("before, ECE ")
    assert labels[2].startswith("after temperature scaling (T = 2.5), ECE ")
    np.testing.assert_allclose(curves[1].get_lines()[2].get_ydata(), [0.5])
    assert [sum(bar.get_height() for bar in ax.patches) for ax in counts] == [5, 2]
