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


EXTERNAL_PREFIX = "external:"


def external_part(name: str) -> str:
    """The `part` of a run's predictions on the external set `name`."""
    return EXTERNAL_PREFIX + name


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


def resampled_means(held_out: dict[str, pd.DataFrame], n_resamples: int) -> dict:
    """For each named set of runs (its held-out predictions): the mean over runs of each run's
    metric, and that mean on every cluster-bootstrap resample. All sets are scored on the same
    draws of near-duplicate groups, so two recipes over the same folds can be compared pair by
    pair. Returns {name: (point {metric: value}, samples {metric: array over resamples})}."""
    every = pd.concat(held_out.values())
    code_of = {g: i for i, g in enumerate(pd.unique(every.near_duplicate_group))}
    runs = {
        name: [
            (
                run.label.to_numpy(),
                (run.prob_covid.to_numpy() >= 0.5).astype(int),
                run.prob_covid.to_numpy(),
                run.near_duplicate_group.map(code_of).to_numpy(),
            )
            for _, run in frame.groupby(["fold", "seed"], sort=True)
        ]
        for name, frame in held_out.items()
    }
    result = {}
    for name, per_run in runs.items():
        whole = [weighted_scores(y, p, s, np.ones(len(y))) for y, p, s, _ in per_run]
        point = {m: float(np.mean([w[m] for w in whole])) for m in BOOTSTRAP_METRICS}
        samples = {m: [] for m in BOOTSTRAP_METRICS}
        # The same seed for every set: the same draws of groups.
        for weight in group_resampling_weights(np.arange(len(code_of)), n_resamples, seed=0):
            scores = [weighted_scores(y, p, s, weight[g]) for y, p, s, g in per_run]
            for m in BOOTSTRAP_METRICS:
                samples[m].append(np.nanmean([sc[m] for sc in scores]))
        result[name] = (point, {m: np.asarray(v) for m, v in samples.items()})
    return result


def headline(predictions: pd.DataFrame, n_resamples: int = 1000, level: float = 0.95) -> dict:
    """The protocol's headline from every run's predictions (columns fold, seed, part, label,
    prob_covid, near_duplicate_group).

    cv: the mean over folds x seeds of each run's held-out metric, with its cluster-bootstrap
    interval; seed_sd: the standard deviation over seeds of the mean over folds (how much a
    rerun with another seed moves the headline); ensemble_test: the locked test scored by the
    mean probability of all fold models.
    """
    held = predictions[predictions.part == HELD_OUT]
    point, samples = resampled_means({"cv": held}, n_resamples)["cv"]
    per_run = held.groupby(["fold", "seed"]).apply(
        lambda run: pd.Series(
            weighted_scores(
                run.label.to_numpy(),
                (run.prob_covid.to_numpy() >= 0.5).astype(int),
                run.prob_covid.to_numpy(),
                np.ones(len(run)),
            )
        )
    )
    seed_means = per_run.groupby("seed").mean()
    result = {
        "folds": int(held.fold.nunique()),
        "seeds": sorted(int(s) for s in held.seed.unique()),
        "images": int(held.path.nunique()),
        "groups": int(held.near_duplicate_group.nunique()),
        "cv": point,
        "cv_ci95": {m: percentile_interval(samples[m], level) for m in BOOTSTRAP_METRICS},
        # null, not NaN (which is not JSON), where one seed or one run leaves no spread
        "seed_sd": {
            m: float(seed_means[m].std(ddof=1)) if len(seed_means) > 1 else None
            for m in BOOTSTRAP_METRICS
        },
        "fold_sd": {
            m: float(per_run[m].std(ddof=1)) if len(per_run) > 1 else None
            for m in BOOTSTRAP_METRICS
        },
    }
    result.update(ensemble_test(predictions[predictions.part == TEST], n_resamples, level))
    result["external"] = {}
    for part in sorted(p for p in predictions.part.unique() if p.startswith(EXTERNAL_PREFIX)):
        # Every fold model scores the same external images: their mean, and their ensemble.
        runs = predictions[predictions.part == part]
        point, samples = resampled_means({part: runs}, n_resamples)[part]
        ensemble = ensemble_test(runs, n_resamples, level)
        result["external"][part.removeprefix(EXTERNAL_PREFIX)] = {
            "cv": point,
            "cv_ci95": {m: percentile_interval(samples[m], level) for m in BOOTSTRAP_METRICS},
            "ensemble": ensemble["ensemble_test"],
            "ensemble_ci95": ensemble["ensemble_test_ci95"],
        }
    return result


def paired_cv_differences(
    final: pd.DataFrame, variants: dict[str, pd.DataFrame], n_resamples: int, level: float = 0.95
) -> pd.DataFrame:
    """Each ablation variant against the final recipe over the same folds and seeds: the
    cross-validation means, their difference in points (final minus variant) with a paired
    cluster-bootstrap interval, and whether that interval leaves out zero."""
    for name, frame in variants.items():
        runs = set(zip(frame.fold, frame.seed, strict=True))
        if runs != set(zip(final.fold, final.seed, strict=True)):
            raise ValueError(f"ablation variant {name} ran other folds or seeds than the final")
    scored = resampled_means({"final model": final, **variants}, n_resamples)
    base_point, base_samples = scored["final model"]

    def means(point, samples) -> dict:  # each recipe's CV means with their own intervals
        row = {}
        for m, v in point.items():
            low, high = percentile_interval(samples[m], level)
            row.update({f"cv_{m}": v, f"cv_{m}_low": low, f"cv_{m}_high": high})
        return row

    rows = [{"variant": "final model", **means(base_point, base_samples)}]
    for name in variants:
        point, samples = scored[name]
        row = {"variant": name, **means(point, samples)}
        for m in ("accuracy", "mcc"):
            low, high = percentile_interval(100 * (base_samples[m] - samples[m]), level)
            row.update(
                {
                    f"{m}_points": 100 * (base_point[m] - point[m]),
                    f"{m}_points_low": low,
                    f"{m}_points_high": high,
                }
            )
        row["distinguishable"] = bool(
            row["accuracy_points_low"] > 0 or row["accuracy_points_high"] < 0
        )
        rows.append(row)
    return pd.DataFrame(rows)


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
