"""The ablation table: the final model against the same training with one ingredient changed,
scored on the same test images, so a reader sees what each ingredient buys."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vitct.metrics import paired_differences

COLUMNS = [
    "variant",
    "changes",
    "parameters",
    "best_epoch",
    "val_mcc",
    "test_accuracy",
    "test_mcc",
    "test_roc_auc",
    "unseen_accuracy",
    "accuracy_points",
    "accuracy_points_low",
    "accuracy_points_high",
    "mcc_points",
    "mcc_points_low",
    "mcc_points_high",
]


def _run(folder: str | Path) -> dict:
    folder = Path(folder)
    return {
        "train": json.loads((folder / "train_metrics.json").read_text()),
        "test": json.loads((folder / "metrics.json").read_text()),
        "predictions": pd.read_csv(folder / "predictions.csv"),
    }


def ablation_table(
    final_dir: str | Path, variant_dirs: dict, variants: dict, n_resamples: int = 1000
) -> pd.DataFrame:
    """One row for the final model, one per variant (name -> results folder).

    *_points are 100 x (final - variant) with a paired cluster-bootstrap 95% interval over the
    test images' near-duplicate groups: what the ingredient the variant removes or changes is
    worth; positive means the final model's choice is better.
    """
    final = _run(final_dir)
    rows = [_row("final model", "", final, None)]
    for name, folder in variant_dirs.items():
        run = _run(folder)
        if not run["predictions"].path.equals(final["predictions"].path):
            raise ValueError(f"ablation variant {name} was tested on other images than the final")
        changes = ", ".join(f"{k}={v}" for k, v in variants[name].items())
        diff = paired_differences(
            final["predictions"].label.eq("COVID"),
            final["predictions"].prob_covid,
            run["predictions"].prob_covid,
            n_resamples,
            groups=final["predictions"].near_duplicate_group,
        )
        rows.append(_row(name, changes, run, diff))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(name: str, changes: str, run: dict, diff: dict | None) -> dict:
    train, test = run["train"], run["test"]
    row = {
        "variant": name,
        "changes": changes,
        "parameters": train["parameters"],
        "best_epoch": train["best_epoch"],
        "val_mcc": train["val_mcc"],
        "test_accuracy": test["accuracy"],
        "test_mcc": test["mcc"],
        "test_roc_auc": test["roc_auc"],
        "unseen_accuracy": test.get("no_near_duplicate_in_train", {}).get("accuracy"),
    }
    for metric in ("accuracy", "mcc"):
        value, low, high = [100 * v for v in diff[metric]] if diff else [0.0, 0.0, 0.0]
        row.update(
            {f"{metric}_points": value, f"{metric}_points_low": low, f"{metric}_points_high": high}
        )
    return row
