"""The cross-validation protocol's numbers: per-run and per-fold tables, the headline with its
interval, the seed-to-seed spread, and the fold models' ensemble on the locked test split.

Every interval here is a cluster bootstrap over near-duplicate groups: one resample draws whole
groups, and every run (fold x seed) is scored on the same draw, so the interval counts patients
rather than slices and pairs the runs the way they share images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vitct.metrics import (
    BOOTSTRAP_METRICS,
    binary_metrics,
    bootstrap_intervals,
    group_resampling_weights,
    percentile_interval,
    weighted_scores,
)

HELD_OUT, TEST = "held_out", "test"  # the `part` column of a run's predictions


def run_table(runs: list[dict]) -> pd.DataFrame:
    """One row per (fold, seed) run: its held-out fold's and the locked test's metrics."""
    rows = []
    for run in runs:
        row = {"fold": run["fold"], "seed": run["seed"], "best_epoch": run["best_epoch"]}
        for part in (HELD_OUT, TEST):
            row[f"{part}_n"] = run[part]["n"]
            row.update({f"{part}_{m}": run[part][m] for m in BOOTSTRAP_METRICS})
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["fold", "seed"], ignore_index=True)


def fold_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per fold: the held-out metrics' mean and range over seeds."""
    columns = [f"{HELD_OUT}_{m}" for m in BOOTSTRAP_METRICS]
    grouped = runs.groupby("fold")[columns]
    table = grouped.mean().add_suffix("_mean")
    if runs.seed.nunique() > 1:
        spread = (grouped.max() - grouped.min()).add_suffix("_seed_range")
        table = table.join(spread)
    table.insert(0, "images", runs.groupby("fold")[f"{HELD_OUT}_n"].first())
    return table.reset_index()


def headline(predictions: pd.DataFrame, n_resamples: int = 1000, level: float = 0.95) -> dict:
    """The protocol's headline from every run's predictions (columns fold, seed, part, label,
    prob_covid, near_duplicate_group).

    cv: the mean over folds x seeds of each run's held-out metric, with its cluster-bootstrap
    interval; seed_sd: the standard deviation over seeds of the mean over folds (how much a
    rerun with another seed moves the headline); ensemble_test: the locked test scored by the
    mean probability of all fold models.
    """
    held = predictions[predictions.part == HELD_OUT]
    runs = [run for _, run in held.groupby(["fold", "seed"], sort=True)]
    codes = pd.factorize(held.near_duplicate_group)[0]
    per_run = [
        (
            run.label.to_numpy(),
            (run.prob_covid.to_numpy() >= 0.5).astype(int),
            run.prob_covid.to_numpy(),
            codes[held.index.get_indexer(run.index)],
        )
        for run in runs
    ]
    whole = [weighted_scores(y, p, s, np.ones(len(y))) for y, p, s, _ in per_run]
    point = {m: float(np.mean([w[m] for w in whole])) for m in BOOTSTRAP_METRICS}
    samples = {m: [] for m in BOOTSTRAP_METRICS}
    # One draw of groups over all non-test images, scored by every run on its own fold.
    for weight in group_resampling_weights(np.unique(codes), n_resamples, seed=0):
        scores = [
            weighted_scores(y, p, s, weight[g]) for y, p, s, g in per_run if weight[g].sum() > 0
        ]
        for m in BOOTSTRAP_METRICS:
            values = [sc[m] for sc in scores if not np.isnan(sc[m])]
            if values:
                samples[m].append(np.mean(values))
    seed_means = (
        pd.DataFrame([{"seed": run.seed.iloc[0], **w} for run, w in zip(runs, whole, strict=True)])
        .groupby("seed")[list(BOOTSTRAP_METRICS)]
        .mean()
    )
    result = {
        "folds": int(held.fold.nunique()),
        "seeds": sorted(int(s) for s in held.seed.unique()),
        "images": int(held.path.nunique()),
        "groups": int(held.near_duplicate_group.nunique()),
        "cv": point,
        "cv_ci95": {m: percentile_interval(samples[m], level) for m in BOOTSTRAP_METRICS},
        "seed_sd": {
            m: float(seed_means[m].std(ddof=1)) if len(seed_means) > 1 else float("nan")
            for m in BOOTSTRAP_METRICS
        },
        "fold_sd": {
            m: float(np.std([w[m] for w in whole], ddof=1)) if len(whole) > 1 else float("nan")
            for m in BOOTSTRAP_METRICS
        },
    }
    result.update(ensemble_test(predictions[predictions.part == TEST], n_resamples, level))
    return result


def ensemble_test(test: pd.DataFrame, n_resamples: int, level: float) -> dict:
    """The locked test split scored by the mean COVID probability of all fold models, with a
    cluster-bootstrap interval, and the single runs' mean for comparison."""
    mean_prob = test.groupby("path", sort=True).agg(
        label=("label", "first"),
        prob_covid=("prob_covid", "mean"),
        group=("near_duplicate_group", "first"),
    )
    single = test.groupby(["fold", "seed"])[["label", "prob_covid"]].apply(
        lambda run: binary_metrics(run.label, run.prob_covid)["accuracy"]
    )
    scored = binary_metrics(mean_prob.label, mean_prob.prob_covid)
    return {
        "ensemble_test": {m: scored[m] for m in (*BOOTSTRAP_METRICS, "n")},
        "ensemble_test_ci95": bootstrap_intervals(
            mean_prob.label, mean_prob.prob_covid, n_resamples, level=level, groups=mean_prob.group
        ),
        "single_run_test_accuracy_mean": float(single.mean()),
    }
