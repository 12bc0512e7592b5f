"""Every number the report gives, from the runs' predictions tables and metrics files.

- the sweep table (vitct.evaluation.selection, which also makes the choice of a grid
  combination on the grid runs' inner-validation metrics only);
- the cross-validation headline: the final recipe's mean over folds x seeds on the held-out
  folds, with its interval, the seed-to-seed and fold-to-fold spread;
- the shipped model (the final recipe on every non-test image) on the locked test split and on
  every external set, beside the fold models' mean and ensemble and the baselines;
- the ablation: each variant against the final recipe on the same runs' images, paired;
- calibration: the expected calibration error and Brier score before temperature scaling
  (`prob_raw`) and after it (`prob_covid`), with the temperature, on every part the shipped
  model is scored on and as the cross-validation mean on the held-out folds;
- which data chose what, and which figure a choice makes optimistic.

Every interval is a cluster bootstrap: one resample draws whole near-duplicate groups (one
patient's neighbouring slices are not independent cases), and every run of every recipe on one
part is scored on the same draws, so recipes over the same images compare pair by pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vitct.data.partition import ALL, DRAW, LEAVE_OUT
from vitct.evaluation.metrics import (
    binary_metrics,
    brier_score,
    expected_calibration_error,
    percentile_interval,
    resampling_weights,
    weighted_score_matrix,
)
from vitct.evaluation.scoring import EXTERNAL_PREFIX, HELD_OUT, TEST
from vitct.evaluation.selection import sweep_runs

METRICS = ("accuracy", "mcc", "roc_auc")
LEVEL = 0.95
RUN_KEYS = ["recipe", "fold", "seed"]
# Calibration of a run's COVID probability: before temperature scaling (prob_raw) and after it.
CALIBRATION = ("ece_raw", "ece", "brier_raw", "brier")
# --- resampling -----------------------------------------------------------------------------


def resampled(frames: dict[str, pd.DataFrame], n_resamples: int) -> dict[str, tuple]:
    """For each named set of runs' predictions on one part (columns fold, seed, label,
    prob_covid, group): each metric's mean over the runs, and that mean on every
    cluster-bootstrap resample of the part's groups; every set is scored on the same draws.
    Returns {name: (point {metric: value}, samples {metric: array over resamples})}."""
    every = pd.concat(frames.values())
    codes = {g: i for i, g in enumerate(pd.unique(every.group))}
    weights = resampling_weights(np.arange(len(codes)), n_resamples, seed=0)
    result = {}
    for name, frame in frames.items():
        points, samples = [], []
        for _, run in frame.groupby(["fold", "seed"], sort=True):
            y, prob = run.label.to_numpy(), run.prob_covid.to_numpy()
            points.append(weighted_score_matrix(y, prob, np.ones((1, len(y)))))
            if n_resamples:
                code = run.group.map(codes).to_numpy()
                samples.append(weighted_score_matrix(y, prob, weights[:, code]))
        point = {m: float(np.nanmean([p[m][0] for p in points])) for m in METRICS}
        drawn = {
            m: np.nanmean(np.stack([s[m] for s in samples]), axis=0) if samples else np.zeros(0)
            for m in METRICS
        }
        result[name] = (point, drawn)
    return result


def _interval(samples: dict) -> dict:
    return {m: percentile_interval(v[np.isfinite(v)], LEVEL) for m, v in samples.items()}


def scored(frame: pd.DataFrame, n_resamples: int) -> dict:
    """Metrics of one set of runs on one part: the mean over runs, its interval, the number of
    images and runs, and the share flagged unfamiliar."""
    point, samples = resampled({"": frame}, n_resamples)[""]
    flags = frame.unfamiliar.dropna() if "unfamiliar" in frame else pd.Series(dtype=bool)
    own = frame.ood_score.dropna() if "ood_score" in frame else pd.Series(dtype=float)
    return {
        **point,
        "ci95": _interval(samples) if n_resamples else {},
        "n": int(frame.path.nunique()),
        "runs": int(frame.groupby(["fold", "seed"]).ngroups),
        "flagged_share": float(flags.mean()) if len(flags) else None,
        # by their own scores alone; flagged_share adds the images of a set flagged as a whole
        "own_flagged_share": float((own > 1).mean()) if len(own) else None,
        "predicted_covid_share": float((frame.prob_covid >= 0.5).mean()),
    }


def ensemble(frame: pd.DataFrame, n_resamples: int) -> dict:
    """One part scored by the mean COVID probability of several runs (an ensemble)."""
    mean = frame.groupby("path", sort=True).agg(
        label=("label", "first"), prob_covid=("prob_covid", "mean"), group=("group", "first")
    )
    return scored(mean.reset_index().assign(fold=ALL, seed=0), n_resamples)


# --- the summaries ----------------------------------------------------------------------------


def run_table(predictions: pd.DataFrame, metrics: dict) -> pd.DataFrame:
    """One row per scored run and part: its metrics, flagged share and chosen epoch."""
    rows = []
    for (recipe, fold, seed, part), frame in predictions.groupby([*RUN_KEYS, "part"], sort=True):
        scores = binary_metrics(frame.label, frame.prob_covid)
        flags = frame.unfamiliar.dropna()
        rows.append(
            {
                "recipe": recipe,
                "fold": fold,
                "seed": seed,
                "part": part,
                "n": scores["n"],
                **{m: scores[m] for m in METRICS},
                **calibration_scores(frame),
                "flagged_share": float(flags.mean()) if len(flags) else np.nan,
                "best_epoch": metrics.get((recipe, fold, seed), {}).get("best_epoch"),
                "temperature": temperature_of(metrics.get((recipe, fold, seed), {})),
            }
        )
    return pd.DataFrame(rows)


def calibration_scores(frame: pd.DataFrame) -> dict:
    """One run's predictions on one part: ECE and Brier score of its COVID probability before
    temperature scaling (prob_raw) and after it (prob_covid)."""
    return {
        "ece_raw": expected_calibration_error(frame.label, frame.prob_raw),
        "ece": expected_calibration_error(frame.label, frame.prob_covid),
        "brier_raw": brier_score(frame.label, frame.prob_raw),
        "brier": brier_score(frame.label, frame.prob_covid),
    }


def temperature_of(run_metrics: dict) -> float | None:
    """A run's fitted temperature (train_metrics.json's calibration), None where it has none."""
    return run_metrics.get("calibration", {}).get("temperature")


def calibration(predictions: pd.DataFrame, metrics: dict, shipped: tuple) -> dict:
    """ECE and Brier score before and after temperature scaling, per part: the final recipe's
    cross-validation mean on the held-out folds (over folds x seeds, with the mean and range
    of their temperatures) and the shipped model on every part it is scored on (its own
    temperature). A temperature is None where a run's metrics hold none."""
    result = {}
    held = cv_held_out(predictions)
    if not held.empty:
        runs = held.groupby(["fold", "seed"], sort=True)
        scores = pd.DataFrame([calibration_scores(frame) for _, frame in runs])
        temperatures = [temperature_of(metrics.get(("final", *key), {})) for key, _ in runs]
        known = None not in temperatures
        result[HELD_OUT] = {
            **scores.mean().to_dict(),
            "runs": int(runs.ngroups),
            "n": int(held.path.nunique()),
            "temperature": float(np.mean(temperatures)) if known else None,
            "temperature_range": [min(temperatures), max(temperatures)] if known else None,
        }
    own = predictions[is_run(predictions, shipped)]
    temperature = temperature_of(metrics.get(shipped, {}))
    for part, frame in own.groupby("part", sort=True):
        result[part] = {
            **calibration_scores(frame),
            "runs": 1,
            "n": int(frame.path.nunique()),
            "temperature": temperature,
        }
    return result


def cv_fold(folds: pd.Series) -> pd.Series:
    """True for the cross-validation folds (fold0, fold1, ...): not `all`, not a left-out
    source, not an adaptation's draw."""
    return folds.astype(str).str.fullmatch(r"fold\d+")


def fold_table(runs: pd.DataFrame, recipe: str = "final") -> pd.DataFrame:
    """Per fold: the recipe's held-out metrics, mean over seeds and (with several) their range."""
    held = runs[(runs.recipe == recipe) & (runs.part == HELD_OUT) & cv_fold(runs.fold)]
    grouped = held.groupby("fold")[list(METRICS)]
    table = grouped.mean().add_suffix("_mean")
    if held.seed.nunique() > 1:
        table = table.join((grouped.max() - grouped.min()).add_suffix("_seed_range"))
    table.insert(0, "images", held.groupby("fold").n.first())
    return table.reset_index()


def cv_held_out(predictions: pd.DataFrame) -> pd.DataFrame:
    """The final recipe's cross-validation runs on their held-out folds: what the
    cross-validation mean averages."""
    final = predictions[(predictions.recipe == "final") & (predictions.part == HELD_OUT)]
    return final[cv_fold(final.fold)]


def cross_validation(predictions: pd.DataFrame, n_resamples: int) -> dict | None:
    """The final recipe's cross-validation headline on the held-out folds, or None without
    folds: the mean over folds x seeds with its interval, and the spread between seeds (of the
    mean over folds) and between folds (of the mean over seeds)."""
    held = cv_held_out(predictions)
    if held.empty:
        return None
    result = scored(held, n_resamples)
    per_run = held.groupby(["fold", "seed"]).apply(
        lambda run: pd.Series(binary_metrics(run.label, run.prob_covid))[list(METRICS)]
    )
    seed_means = per_run.groupby("seed").mean()
    fold_means = per_run.groupby("fold").mean()
    result.update(
        {
            "folds": int(held.fold.nunique()),
            "seeds": sorted(int(s) for s in held.seed.unique()),
            "groups": int(held.group.nunique()),
            # null, not NaN (which is not JSON), where one seed or one fold leaves no spread
            "seed_sd": {m: _sd(seed_means[m]) for m in METRICS},
            "fold_sd": {m: _sd(fold_means[m]) for m in METRICS},
        }
    )
    return result


def _sd(values: pd.Series) -> float | None:
    return float(values.std(ddof=1)) if len(values) > 1 else None


def shipped_model(
    predictions: pd.DataFrame, shipped: tuple, n_resamples: int, threshold: float
) -> dict:
    """The shipped model on every part it is scored on (the locked test, each external set):
    every binary metric, its interval, and on the locked test the images with no near-duplicate
    among the slices it saw (nearest_seen below `threshold`)."""
    own = predictions[is_run(predictions, shipped)]
    result = {}
    for part, frame in own.groupby("part", sort=True):
        every = binary_metrics(frame.label, frame.prob_covid)
        result[part] = {**every, **scored(frame, n_resamples), "unflagged": unflagged(frame)}
    test = own[own.part == TEST]
    unseen = test[test.nearest_seen < threshold]
    result["test_no_near_duplicate_seen"] = (
        binary_metrics(unseen.label, unseen.prob_covid) if len(unseen) else {"n": 0}
    )
    return result


def unflagged(frame: pd.DataFrame) -> dict:
    """The images the out-of-distribution flag lets through: how many, and the accuracy on them
    (None when none is, or nothing was scored for familiarity)."""
    through = (
        frame[frame.unfamiliar.eq(False).fillna(False)] if "unfamiliar" in frame else frame[:0]
    )
    right = ((through.prob_covid >= 0.5).astype(int) == through.label).mean()
    return {"n": int(len(through)), "accuracy": float(right) if len(through) else None}


def fold_models(predictions: pd.DataFrame, n_resamples: int) -> dict:
    """The cross-validation runs of the final recipe on the locked test and each external set:
    the mean of their metrics (with an interval) and their ensemble."""
    cv = predictions[(predictions.recipe == "final") & cv_fold(predictions.fold)]
    return {
        part: {"mean": scored(frame, n_resamples), "ensemble": ensemble(frame, n_resamples)}
        for part, frame in cv[cv.part != HELD_OUT].groupby("part", sort=True)
    }


def baselines_summary(baselines: pd.DataFrame, n_resamples: int) -> dict:
    """Each baseline on the held-out folds (mean over folds), the locked test and each external
    set (fitted on every non-test image)."""
    result = {}
    for model, frame in baselines.groupby("model", sort=False):
        frame = frame.assign(seed=0)
        parts = {}
        for part, rows in frame.groupby("part", sort=True):
            rows = rows[cv_fold(rows.fold)] if part == HELD_OUT else rows[rows.fold == ALL]
            parts[part] = scored(rows, n_resamples)
        result[model] = parts
    return result


def ablation_table(
    predictions: pd.DataFrame, variants: dict, n_resamples: int, cross_validated: bool
) -> pd.DataFrame:
    """Each variant against the final recipe on the same runs' images, per part (the held-out
    folds or the locked test, and each external set): both recipes' means with their own
    intervals, and the difference in points (final minus variant) with a paired interval;
    `distinguishable` when that interval leaves out zero."""
    final = predictions[predictions.recipe == "final"]
    final = final[cv_fold(final.fold)] if cross_validated else final[final.fold == ALL]
    parts = [HELD_OUT if cross_validated else TEST]
    parts += sorted(p for p in final.part.unique() if p.startswith(EXTERNAL_PREFIX))
    rows = []
    for part in parts:
        base = final[final.part == part]
        frames = {"final": base}
        for name in variants:
            frame = predictions[(predictions.recipe == name) & (predictions.part == part)]
            if not frame.empty:
                frames[name] = frame
        scored_sets = resampled(frames, n_resamples)
        base_point, base_samples = scored_sets["final"]
        for name, (point, samples) in scored_sets.items():
            row = {
                "scored_on": _part_title(part),
                "variant": name,
                "changes": ", ".join(f"{k}={v}" for k, v in variants.get(name, {}).items()),
                "runs": int(frames[name].groupby(["fold", "seed"]).ngroups),
            }
            intervals = _interval(samples) if n_resamples else {}
            for m in METRICS:
                low, high = intervals.get(m, [np.nan, np.nan])
                row.update({m: point[m], f"{m}_low": low, f"{m}_high": high})
            if name != "final":
                for m in ("accuracy", "mcc"):
                    diff = 100 * (base_samples[m] - samples[m])
                    low, high = percentile_interval(diff[np.isfinite(diff)], LEVEL)
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


def protocol(plan: dict, metrics: dict, grid_runs: pd.DataFrame) -> dict:
    """Which data chose what, the choices made, and the figures a choice makes optimistic."""
    chosen = {
        ("shipped model" if fold == ALL else fold) + f", seed {seed}": m["chosen"]["params"]
        for (recipe, fold, seed), m in sorted(metrics.items())
        if recipe == "final" and m.get("chosen")
    }
    where = (
        "each fold's own grid runs" if plan["nested"] else "the grid runs on all non-test images"
    )
    optimistic = []
    if plan["folds"] and not plan["nested"]:
        optimistic.append(
            "the cross-validation mean: the grid was chosen on the inner validation split of "
            "the non-test images, and the folds score those images as held-out "
            "(sweep.nested: false)"
        )
    if plan["strategy"] == "random":
        optimistic.append(
            "the locked test: a random split (split.strategy: random) leaves near-copies of "
            "training slices in it; the cross-validation folds are grouped"
        )
    return {
        "epoch_and_threshold": "each run's inner validation split (split.val of its own "
        "training images, by near-duplicate group)",
        "recipe": f"the grid combination with the best inner-validation {plan['metric']} on "
        + where
        + (
            "; the shipped model: the best mean over the folds (one-standard-error rule)"
            if plan["nested"]
            else ""
        ),
        "grid_runs": int(len(grid_runs)),
        "chosen": chosen,
        "scored_only": "held-out folds, the locked test and external sets are read only by the "
        "score step, once a run's model is final",
        "optimistic": optimistic,
    }


def headline(
    predictions: pd.DataFrame,
    baselines: pd.DataFrame,
    metrics: dict,
    plan: dict,
    n_resamples: int,
) -> dict:
    """The numbers the report leads with (see the module's docstring)."""
    grid_metrics = [m for m in metrics.values() if m["recipe"] in plan["grid_recipes"]]
    grid_runs = sweep_runs(grid_metrics, plan["grid"])
    shipped = run_key(plan["shipped"])
    result = {
        "protocol": protocol(plan, metrics, grid_runs),
        "cv": cross_validation(predictions, n_resamples),
        "shipped": {
            "run": dict(zip(RUN_KEYS, shipped, strict=True)),
            **shipped_model(predictions, shipped, n_resamples, plan["threshold"]),
        },
        "fold_models": fold_models(predictions, n_resamples),
        "baselines": baselines_summary(baselines, n_resamples),
        "calibration": calibration(predictions, metrics, shipped),
    }
    if len(plan["sources"]) > 1:
        result["sources"] = sources_summary(predictions, shipped, n_resamples)
    cv, test = result["cv"], result["shipped"].get(TEST)
    if cv and test and cv.get("ci95"):
        low, high = cv["ci95"]["accuracy"]
        result["test_inside_cv_interval"] = bool(low <= test["accuracy"] <= high)
    return json_safe(result)


def json_safe(value):
    """NaN (a metric one class cannot have, such as ROC-AUC) as null: NaN is not JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def is_run(frame: pd.DataFrame, key: tuple) -> pd.Series:
    recipe, fold, seed = key
    return (frame.recipe == recipe) & (frame.fold == fold) & (frame.seed == seed)


def run_key(folder: str) -> tuple:
    """(recipe, fold, seed) of a run folder, results/runs/RECIPE/FOLD/seedSEED."""
    path = Path(folder)
    return path.parent.parent.name, path.parent.name, int(path.name.removeprefix("seed"))


def _part_title(part: str) -> str:
    titles = {HELD_OUT: "held-out folds", TEST: "locked test"}
    return titles.get(part, part.replace(EXTERNAL_PREFIX, "external set "))


def read_runs(paths: list, reader) -> pd.DataFrame:
    """Every run file (results/runs/RECIPE/FOLD/seedSEED/NAME) read by `reader`, with the run's
    recipe, fold and seed as columns."""
    frames = []
    for path in paths:
        recipe, fold, seed = run_key(str(Path(path).parent))
        frames.append(reader(path).assign(recipe=recipe, fold=fold, seed=seed))
    return pd.concat(frames, ignore_index=True)


# --- several sources, and adaptation to a new site --------------------------------------------


def sources_summary(predictions: pd.DataFrame, shipped: tuple, n_resamples: int) -> dict:
    """With several training sources: the cross-validation mean and the shipped model's locked
    test on each source's images apart (beside the pooled figures of the headline)."""

    def by_source(frame: pd.DataFrame) -> dict:
        return {str(s): scored(rows, n_resamples) for s, rows in frame.groupby("source")}

    shipped_test = predictions[is_run(predictions, shipped) & (predictions.part == TEST)]
    return {"cv": by_source(cv_held_out(predictions)), "test": by_source(shipped_test)}


def leave_one_source_out(predictions: pd.DataFrame, n_resamples: int) -> pd.DataFrame:
    """Per source: the final recipe trained without it and scored on all of its images (the
    lo_SOURCE runs' held-out part), beside the cross-validation runs' score on its images of the
    held-out folds (trained with it)."""
    final = predictions[predictions.recipe == "final"]
    rows = []
    for fold, frame in final[final.fold.str.startswith(LEAVE_OUT)].groupby("fold", sort=True):
        source = fold.removeprefix(LEAVE_OUT)
        left_out = scored(frame[frame.part == HELD_OUT], n_resamples)
        row = {"source": source, "trained on": "the other sources", **_row_cells(left_out)}
        rows.append(row)
        cv = final[~final.fold.str.startswith(LEAVE_OUT) & (final.part == HELD_OUT)]
        cv = cv[cv.source == source]
        if len(cv):
            with_it = _row_cells(scored(cv, n_resamples))
            rows.append({"source": source, "trained on": "every source (CV folds)", **with_it})
    return pd.DataFrame(rows)


def _row_cells(result: dict) -> dict:
    cells = {"images": result["n"], "runs": result["runs"]}
    for m in METRICS:
        low, high = result.get("ci95", {}).get(m, [np.nan, np.nan])
        cells.update({m: result[m], f"{m}_low": low, f"{m}_high": high})
    return cells


def learning_curve(predictions: pd.DataFrame, shipped: tuple, site: str, n_resamples: int):
    """Per number of labelled site slices: the adapted models' mean (over draws) on the site's
    evaluation part, with intervals over its groups, and on the locked test beside the shipped
    model's (what adapting cost in-source, paired); n 0 is the shipped model itself."""
    part = EXTERNAL_PREFIX + site
    adapted = predictions[predictions.fold.str.startswith(DRAW)]  # adaptations: on draws
    points = {0: predictions[is_run(predictions, shipped)]}
    for recipe, frame in adapted.groupby("recipe", sort=False):
        n = recipe.rsplit("~n", 1)[1]
        points[n if n == "all" else int(n)] = frame
    base_test = points[0][points[0].part == TEST]
    rows = []
    for n, frame in sorted(
        points.items(), key=lambda kv: (kv[0] == "all", kv[0] != "all" and kv[0])
    ):
        on_site = scored(frame[frame.part == part], n_resamples)
        test = frame[frame.part == TEST]
        sets = resampled({"shipped": base_test, "adapted": test}, n_resamples)
        (base, base_samples), (point, samples) = sets["shipped"], sets["adapted"]
        diff = 100 * (samples["accuracy"] - base_samples["accuracy"])
        low, high = percentile_interval(diff[np.isfinite(diff)], LEVEL)
        rows.append(
            {
                "labelled site slices": n,
                "draws": on_site["runs"],
                **{f"site {k}": v for k, v in _row_cells(on_site).items() if k not in ("runs",)},
                "locked test accuracy": point["accuracy"],
                "in-source points": 100 * (point["accuracy"] - base["accuracy"]),
                "in-source points low": low,
                "in-source points high": high,
            }
        )
    return pd.DataFrame(rows)
