"""The cross-validation headline, its tables and paired differences over the folds' runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import table_of_groups

from vitct.crossval import (
    HELD_OUT,
    TEST,
    external_part,
    fold_table,
    headline,
    paired_cv_differences,
    run_table,
)
from vitct.folds import assign_folds


def cv_predictions(folds: int = 3, seeds=(0, 1), accuracy: float = 0.85) -> pd.DataFrame:
    """Predictions of every (fold, seed) run on its held-out fold and on the locked test."""
    table = table_of_groups(n_groups=150)
    table["fold"] = assign_folds(table, folds, seed=0)
    rng = np.random.default_rng(1)
    parts = []
    for fold in range(folds):
        for seed in seeds:
            for part, rows in (
                (HELD_OUT, table[table.fold == fold]),
                (TEST, table[table.fold < 0]),
            ):
                right = rng.random(len(rows)) < accuracy
                prob = np.where(right == (rows.label == 1), 0.8, 0.2) + rng.normal(
                    0, 0.05, len(rows)
                )
                parts.append(
                    rows[["path", "label", "near_duplicate_group"]].assign(
                        fold=fold, seed=seed, part=part, prob_covid=prob.clip(0, 1)
                    )
                )
    return pd.concat(parts, ignore_index=True)


def test_the_headline_is_the_mean_over_runs_with_an_interval_around_it():
    predictions = cv_predictions()
    result = headline(predictions, n_resamples=200)
    held = predictions[predictions.part == HELD_OUT]
    per_run = held.groupby(["fold", "seed"]).apply(
        lambda r: ((r.prob_covid >= 0.5) == (r.label == 1)).mean()
    )
    assert result["cv"]["accuracy"] == pytest.approx(per_run.mean())
    low, high = result["cv_ci95"]["accuracy"]
    assert low < result["cv"]["accuracy"] < high and high - low < 0.2
    seed_means = per_run.groupby("seed").mean()
    assert result["seed_sd"]["accuracy"] == pytest.approx(seed_means.std(ddof=1))
    assert (result["folds"], result["seeds"]) == (3, [0, 1])
    assert result["ensemble_test"]["n"] == predictions[predictions.part == TEST].path.nunique()


def test_one_seed_leaves_the_seed_spread_null_and_the_headline_valid_json():
    import json

    result = headline(cv_predictions(seeds=(0,)), n_resamples=50)
    assert set(result["seed_sd"].values()) == {None}
    assert result["fold_sd"]["accuracy"] > 0
    json.dumps(result, allow_nan=False)  # NaN is not JSON: strict readers refuse it


def test_run_and_fold_tables_have_a_row_per_run_and_per_fold():
    predictions = cv_predictions()
    runs = []
    for (fold, seed), run in predictions.groupby(["fold", "seed"]):
        metrics = {"fold": fold, "seed": seed, "best_epoch": 1}
        for part in (HELD_OUT, TEST):
            rows = run[run.part == part]
            correct = float(((rows.prob_covid >= 0.5) == (rows.label == 1)).mean())
            metrics[part] = {"n": len(rows), "accuracy": correct, "mcc": 0.5, "roc_auc": 0.9}
        runs.append(metrics)
    table = run_table(runs)
    assert len(table) == 6 and list(table.columns[:3]) == ["fold", "seed", "best_epoch"]
    folds = fold_table(table)
    assert list(folds.fold) == [0, 1, 2]
    assert "held_out_accuracy_seed_range" in folds.columns


def test_an_ingredient_that_matters_stands_out_and_one_that_does_not_stays_in_the_noise():
    final = cv_predictions(accuracy=0.9)
    held = final[final.part == HELD_OUT]
    worse = cv_predictions(accuracy=0.7)
    worse = worse[worse.part == HELD_OUT]
    rng = np.random.default_rng(5)
    same = held.assign(prob_covid=(held.prob_covid + rng.normal(0, 0.01, len(held))).clip(0, 1))
    table = paired_cv_differences(held, {"worse": worse, "same": same}, n_resamples=200)
    assert list(table.variant) == ["final model", "worse", "same"]
    rows = table.set_index("variant")
    assert rows.loc["worse", "accuracy_points"] > 10 and rows.loc["worse", "distinguishable"]
    assert abs(rows.loc["same", "accuracy_points"]) < 2 and not rows.loc["same", "distinguishable"]
    assert rows.loc["worse", "accuracy_points_low"] > 0


def test_a_variant_run_on_other_folds_is_refused():
    held = cv_predictions()
    held = held[held.part == HELD_OUT]
    with pytest.raises(ValueError, match="other folds or seeds"):
        paired_cv_differences(held, {"short": held[held.seed == 0]}, n_resamples=10)


def test_external_sets_get_the_fold_models_mean_and_their_ensemble_and_paired_rows():
    predictions = cv_predictions()
    test = predictions[predictions.part == TEST]
    # The same runs on an "external" set: the test images again, every answer flipped.
    external = test.assign(part=external_part("elsewhere"), prob_covid=1 - test.prob_covid)
    result = headline(pd.concat([predictions, external]), n_resamples=100)
    scored = result["external"]["elsewhere"]
    accuracy = result["ensemble_test"]["accuracy"]
    assert scored["ensemble"]["accuracy"] == pytest.approx(1 - accuracy)
    low, high = scored["cv_ci95"]["accuracy"]
    assert low <= scored["cv"]["accuracy"] <= high < 0.5
    assert headline(predictions, n_resamples=20)["external"] == {}
