"""Choosing the recipe: the grid runs' inner-validation metrics as a table, and the one
combination a tuned recipe takes from it. Only inner validation splits choose: no held-out
fold, locked test or external set is read here (the train step imports this, the summaries
only tabulate it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

# What the sweep table keeps of each grid run's inner-validation metrics.
SWEEP_METRICS = ("val_accuracy", "val_mcc", "val_roc_auc", "val_f1", "val_loss")


def sweep_runs(metrics: list[dict], grid: list[str]) -> pd.DataFrame:
    """One row per grid run: its swept values (in grid order), fold, best epoch, parameters and
    the inner-validation metrics of its best epoch."""
    rows = [
        {
            **{key: m["changes"][key] for key in grid},
            "fold": m["fold"],
            "best_epoch": m["best_epoch"],
            "parameters": m["parameters"],
            **{k: m[k] for k in SWEEP_METRICS if k in m},
            "recipe": m["recipe"],
        }
        for m in metrics
    ]
    return pd.DataFrame(rows)


def sweep_table(runs: pd.DataFrame, grid: list[str]) -> pd.DataFrame:
    """One row per combination: its inner-validation metrics, over folds their mean, standard
    error (`*_se`) and number of folds."""
    metrics = [c for c in runs.columns if c.startswith("val_")]
    grouped = runs.groupby(grid, sort=False)
    table = grouped[[*metrics, "best_epoch"]].mean()
    if grouped.size().max() > 1:
        table = table.join(grouped[metrics].sem(ddof=1).add_suffix("_se"))
    table["folds"] = grouped.size()
    table["parameters"] = grouped.parameters.first()
    table["recipe"] = grouped.recipe.first()
    return table.reset_index()


def pick_best(table: pd.DataFrame, grid: list[str], metric: str) -> dict:
    """Highest inner-validation `metric`; ties go to the lower validation loss, then to the
    fewer parameters, then to the first combination in grid order, so the choice is
    deterministic.

    Over several folds (a `*_se` column), the one-standard-error rule: of the combinations whose
    mean is within one standard error of the best mean, the one with the fewest parameters
    (then the higher mean, then grid order), since a difference smaller than that is noise.
    """
    column = f"val_{metric}"
    ranked = table.assign(_order=range(len(table))).sort_values(
        [column, "val_loss", "parameters", "_order"],
        ascending=[False, True, True, True],
        kind="mergesort",
    )
    top = ranked.iloc[0]
    best = {"rule": "highest"}
    if f"{column}_se" in table and np.isfinite(top[f"{column}_se"]):
        floor = top[column] - top[f"{column}_se"]
        near = ranked[ranked[column] >= floor].sort_values(
            ["parameters", column, "_order"], ascending=[True, False, True], kind="mergesort"
        )
        top = near.iloc[0]
        best = {
            "rule": f"fewest parameters within one standard error of the best mean ({floor:.4f})",
            "standard_error": float(top[f"{column}_se"]),
        }
    return {
        "params": {key: _plain(top[key]) for key in grid},
        "recipe": top["recipe"],
        "selection_metric": column,
        "value": float(top[column]),
        "folds": int(top["folds"]),
        **best,
    }


def choose_recipe(metrics_files: list, grid: list[str], metric: str) -> dict:
    """The grid combination a tuned recipe takes, from its choice runs' train_metrics.json: the
    inner-validation metrics of the grid runs (one fold's, or the mean over several folds')."""
    metrics = [json.loads(Path(p).read_text()) for p in metrics_files]
    if not metrics:
        raise ValueError("no grid run to choose from")
    table = sweep_table(sweep_runs(metrics, grid), grid)
    chosen = pick_best(table, grid, metric)
    # each fold's inner validation split, counted once (its grid runs share it)
    val_images = {m["fold"]: m["images"]["val"] for m in metrics}
    chosen["chosen_on"] = sorted(val_images)
    chosen["chosen_on_images"] = int(sum(val_images.values()))
    return chosen


def _plain(value):
    """numpy scalar -> JSON-friendly Python value."""
    return value.item() if hasattr(value, "item") else value
