"""Figures a reader looks at instead of a table: nothing they need may fall off the edge."""

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg

from vitct import figures

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


def _texts_outside(monkeypatch, tmp_path, plot, *args, **kwargs) -> list[str]:
    """Draw a figure through its plot function; the texts whose boxes leave the figure."""
    drawn = []
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, path: (drawn.append(fig), save(fig, path)))
    plot(*args, tmp_path / "figure.png", **kwargs)
    (fig,) = drawn
    canvas = FigureCanvasAgg(fig)  # closing the figure took its own canvas away
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = canvas.get_width_height()
    texts = [fig._suptitle] + [t for ax in fig.axes for t in ax.get_yticklabels()]
    outside = []
    for text in texts:
        if text is None or not text.get_text():
            continue
        box = text.get_window_extent(renderer)
        if box.x0 < 0 or box.y0 < 0 or box.x1 > width or box.y1 > height:
            outside.append(text.get_text())
    return outside


def test_ablation_labels_stay_inside_the_figure_when_a_variant_changes_many_settings(
    monkeypatch,
    tmp_path,
):
    # Its one-line label was once wider than tight_layout could make room for, and every
    # label was cut off.
    changes = {"final model": "", "no_pretraining": "pretrain_epochs=0"}
    changes["original_recipe"] = MANY_CHANGES
    table = pd.DataFrame({"variant": list(changes), "changes": list(changes.values())})
    for metric in ("accuracy", "mcc"):
        table[f"{metric}_points"] = [0.0, 2.0, 10.0]
        table[f"{metric}_points_low"] = [0.0, -1.0, 6.0]
        table[f"{metric}_points_high"] = [0.0, 5.0, 14.0]

    assert _texts_outside(monkeypatch, tmp_path, figures.plot_ablation, table) == []


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

    outside = _texts_outside(
        monkeypatch, tmp_path, figures.plot_history, history, title=MANY_CHANGES
    )

    assert outside == []
