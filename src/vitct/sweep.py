"""The sweep table and the choice of the best combination."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def summarise(metrics_files: list[str], params: list[str]) -> pd.DataFrame:
    """One row per combination: its swept values (in grid order), then its best epoch's
    validation metrics. A combination trained on several folds gets the mean over them, the
    standard error of each (`*_se`) and the number of folds."""
    rows = []
    for path in metrics_files:
        m = json.loads(Path(path).read_text())
        rows.append(
            {
                **{p: m["params"][p] for p in params},
                "best_epoch": m["best_epoch"],
                "parameters": m["parameters"],
                **{k: v for k, v in m.items() if k.startswith("val_")},
                "run": Path(path).parent.name,  # the combination's folder
            }
        )
    runs = pd.DataFrame(rows)
    if len(runs) == runs.drop_duplicates(params).shape[0]:
        return runs  # one run per combination: today's single validation split
    metrics = [c for c in runs.columns if c.startswith("val_")]
    grouped = runs.groupby(params, sort=False)
    table = grouped[metrics + ["best_epoch"]].mean()
    table = table.join(grouped[metrics].sem(ddof=1).add_suffix("_se"))
    table["folds"] = grouped.size()
    table["parameters"] = grouped.parameters.first()
    table["run"] = grouped.run.first()
    return table.reset_index()


def pick_best(summary: pd.DataFrame, params: list[str], metric: str) -> dict:
    """Highest validation `metric`; ties go to the lower validation loss, then to the fewer
    parameters, then to the first combination in grid order, so the choice is deterministic.

    Over several folds (a `*_se` column), the one-standard-error rule: of the combinations whose
    mean is within one standard error of the best mean, the one with the fewest parameters
    (then the higher mean, then grid order), since a difference smaller than that is noise.
    """
    column = f"val_{metric}"
    ranked = summary.assign(_order=range(len(summary))).sort_values(
        [column, "val_loss", "parameters", "_order"],
        ascending=[False, True, True, True],
        kind="mergesort",
    )
    top = ranked.iloc[0]
    rule = "highest"
    if f"{column}_se" in summary and np.isfinite(top[f"{column}_se"]):
        floor = top[column] - top[f"{column}_se"]
        near = ranked[ranked[column] >= floor].sort_values(
            ["parameters", column, "_order"], ascending=[True, False, True], kind="mergesort"
        )
        top = near.iloc[0]
        rule = f"fewest parameters within one standard error of the best mean ({floor:.4f})"
    best = {
        "params": {p: _plain(top[p]) for p in params},
        "selection_metric": column,
        "value": float(top[column]),
        "run": top["run"],
    }
    if rule != "highest":
        best.update({"standard_error": float(top[f"{column}_se"]), "rule": rule})
    return best


def _plain(value):
    """numpy scalar -> JSON-friendly Python value."""
    return value.item() if hasattr(value, "item") else value
