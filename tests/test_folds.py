"""Grouped, stratified folds and the cross-validation headline built on them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vitct.crossval import HELD_OUT, TEST, fold_table, headline, paired_cv_differences, run_table
from vitct.folds import TEST_FOLD, FoldError, assign_folds, fold_splits


def table_of_groups(n_groups: int = 90, seed: int = 0) -> pd.DataFrame:
    """Images in near-duplicate groups of 1-5 slices that share a label; a fifth of the groups
    are the test split."""
    rng = np.random.default_rng(seed)
    rows = []
    for group in range(n_groups):
        label = group % 2
        split = "test" if group % 5 == 0 else "train"
        for k in range(rng.integers(1, 6)):
            rows.append(
                {
                    "path": f"{group}/{k}.png",
                    "label": label,
                    "class_dir": ("non-COVID", "COVID")[label],
                    "near_duplicate_group": group,
                    "split": split,
                }
            )
    return pd.DataFrame(rows)


def test_folds_keep_groups_whole_balance_classes_and_leave_the_test_split_out():
    table = table_of_groups()
    table["fold"] = assign_folds(table, 4, seed=0)
    assert (table.fold[table.split == "test"] == TEST_FOLD).all()
    pool = table[table.split != "test"]
    assert set(pool.fold) == {0, 1, 2, 3}
    assert (pool.groupby("near_duplicate_group").fold.nunique() == 1).all()
    share = pool.groupby("fold").label.mean()
    assert share.between(0.3, 0.7).all(), share
    sizes = pool.groupby("fold").size()
    assert sizes.max() <= 1.5 * sizes.min(), sizes


def test_folds_depend_on_the_seed_and_nothing_else():
    table = table_of_groups()
    again = table.sample(frac=1.0, random_state=1).sort_index()
    assert assign_folds(table, 3, 5).equals(assign_folds(again, 3, 5))
    assert not assign_folds(table, 3, 5).equals(assign_folds(table, 3, 6))


def test_a_fold_validates_and_the_other_folds_train():
    table = table_of_groups()
    table["fold"] = assign_folds(table, 3, seed=0)
    split = fold_splits(table, 1)
    assert (split[table.fold == 1] == "val").all()
    assert (split[table.fold.isin([0, 2])] == "train").all()
    assert (split[table.fold == TEST_FOLD] == "test").all()
    with pytest.raises(FoldError, match="fold 3"):
        fold_splits(table, 3)


def test_too_few_groups_for_the_folds_says_how_many_there_are():
    table = table_of_groups(n_groups=12)
    with pytest.raises(FoldError, match="lower evaluation.folds"):
        assign_folds(table, 6, seed=0)


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
