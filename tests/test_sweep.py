"""The sweep table and the choice of the best combination, over one validation split or folds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitct.sweep import pick_best, summarise

PARAMS = ["patch_size", "heads"]


def write_run(root: Path, fold, patch: int, heads: int, mcc: float, parameters: int) -> str:
    name = f"patch_size~{patch}_heads~{heads}"
    folder = root / (f"fold{fold}/{name}" if fold is not None else name)
    folder.mkdir(parents=True)
    metrics = {
        "params": {"patch_size": patch, "heads": heads},
        "fold": fold,
        "best_epoch": 3,
        "parameters": parameters,
        "val_mcc": mcc,
        "val_loss": 0.5,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return str(folder / "metrics.json")


def test_one_split_keeps_one_row_per_combination_and_the_highest_wins(tmp_path: Path):
    files = [
        write_run(tmp_path, None, 8, 1, 0.70, 900),
        write_run(tmp_path, None, 16, 1, 0.80, 500),
        write_run(tmp_path, None, 16, 2, 0.79, 500),
    ]
    summary = summarise(files, PARAMS)
    assert len(summary) == 3 and "val_mcc_se" not in summary
    best = pick_best(summary, PARAMS, "mcc")
    assert best["params"] == {"patch_size": 16, "heads": 1} and "rule" not in best


def test_over_folds_the_mean_decides_and_a_near_tie_goes_to_the_smaller_model(tmp_path: Path):
    scores = {  # (patch, heads, parameters): mcc per fold
        (8, 1, 900): [0.82, 0.80, 0.84],  # best mean 0.82, standard error 0.0115
        (16, 1, 500): [0.81, 0.80, 0.82],  # mean 0.81: within one standard error, smaller
        (32, 1, 300): [0.70, 0.72, 0.71],  # smallest, but far below
    }
    files = [
        write_run(tmp_path, fold, patch, heads, mcc, parameters)
        for (patch, heads, parameters), per_fold in scores.items()
        for fold, mcc in enumerate(per_fold)
    ]
    summary = summarise(files, PARAMS)
    assert len(summary) == 3 and list(summary.folds) == [3, 3, 3]
    assert summary.val_mcc[0] == pytest.approx(0.82)
    assert summary.val_mcc_se[0] == pytest.approx(0.02 / 3**0.5)
    best = pick_best(summary, PARAMS, "mcc")
    assert best["params"] == {"patch_size": 16, "heads": 1}
    assert best["value"] == pytest.approx(0.81)
    assert best["rule"].startswith("fewest parameters within one standard error")
