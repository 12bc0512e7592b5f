"""Figures a reader looks at instead of a table: nothing they need may fall off the edge."""

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg

from vitct import figures


def test_ablation_labels_stay_inside_the_figure_when_a_variant_changes_many_settings(
    monkeypatch,
):
    # The shipped configs' original_recipe variant changes ten settings: its one-line label
    # was once wider than tight_layout could make room for, and every label was cut off.
    changes = {
        "final model": "",
        "no_pretraining": "pretrain_epochs=0",
        "original_recipe": ", ".join(
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
            )
        ),
    }
    table = pd.DataFrame({"variant": list(changes), "changes": list(changes.values())})
    for metric in ("accuracy", "mcc"):
        table[f"{metric}_points"] = [0.0, 2.0, 10.0]
        table[f"{metric}_points_low"] = [0.0, -1.0, 6.0]
        table[f"{metric}_points_high"] = [0.0, 5.0, 14.0]
    drawn = []
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, path: (drawn.append(fig), save(fig, path)))

    figures.plot_ablation(table, "/dev/null")

    (fig,) = drawn
    canvas = FigureCanvasAgg(fig)  # closing the figure took its own canvas away
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = canvas.get_width_height()
    labels = fig.axes[0].get_yticklabels()
    assert [label.get_text().split("\n")[0] for label in labels] == [
        "no_pretraining",
        "original_recipe",
    ]
    for label in labels:
        box = label.get_window_extent(renderer)
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, (
            label.get_text()
        )
