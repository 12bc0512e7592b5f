"""The sweep table and the choice of the best combination."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def summarise(metrics_files: list[str], params: list[str]) -> pd.DataFrame:
    """One row per combination: its swept values (in grid order), then its best epoch's
    validation metrics."""
    rows = []
    for path in metrics_files:
        m = json.loads(Path(path).read_text())
        rows.append(
            {
                **{p: m["params"][p] for p in params},
                "best_epoch": m["best_epoch"],
                "parameters": m["parameters"],
                **{k: v for k, v in m.items() if k.startswith("val_")},
                "run": Path(path).parent.name,
            }
        )
    return pd.DataFrame(rows)


def pick_best(summary: pd.DataFrame, params: list[str], metric: str) -> dict:
    """Highest validation `metric`; ties go to the lower validation loss, then to the fewer
    parameters, then to the first combination in grid order, so the choice is deterministic."""
    ranked = summary.assign(_order=range(len(summary))).sort_values(
        [f"val_{metric}", "val_loss", "parameters", "_order"],
        ascending=[False, True, True, True],
        kind="mergesort",
    )
    top = ranked.iloc[0]
    return {
        "params": {p: _plain(top[p]) for p in params},
        "selection_metric": f"val_{metric}",
        "value": float(top[f"val_{metric}"]),
        "run": top["run"],
    }


def _plain(value):
    """numpy scalar -> JSON-friendly Python value."""
    return value.item() if hasattr(value, "item") else value
