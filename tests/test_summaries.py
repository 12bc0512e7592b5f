"""Every number of the report, from hand-made predictions tables and metrics files: the
cross-validation headline, the shipped model, the fold models, the baselines, the ablation, the
sweep's choice and which data chose what."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pytest
from conftest import table_of_groups
from sklearn.metrics import matthews_corrcoef, roc_auc_score

from vitct.data.partition import assign_folds
from vitct.evaluation.metrics import expected_calibration_error
from vitct.evaluation.selection import choose_recipe, pick_best, sweep_runs, sweep_table
from vitct.evaluation.summaries import (
    ablation_table,
    baselines_summary,
    calibration,
    cross_validation,
    ensemble,
    fold_models,
    fold_table,
    headline,
    json_safe,
    protocol,
    run_key,
    run_table,
    scored,
    shipped_model,
)

RESAMPLES = 200
EXTERNAL = "external:scanner_b"


def images() -> dict[str, pd.DataFrame]:
    """The images of each part: the two held-out folds, the locked test, an external set
    (path, label, group)."""
    table = table_of_groups(n_groups=100)
    table["fold"] = assign_folds(table, 2, seed=0)
    table = table.rename(columns={"near_duplicate_group": "group"})[
        ["path", "label", "group", "fold", "test"]
    ]
    external = table_of_groups(n_groups=40, seed=1).rename(
        columns={"near_duplicate_group": "group"}
    )
    external = external.assign(path="ext/" + external.path, group=1000 + external.group)
    return {
        "fold0": table[(table.fold == 0) & ~table.test],
        "fold1": table[(table.fold == 1) & ~table.test],
        "test": table[table.test],
        EXTERNAL: external,
    }


IMAGES = images()


def answers(rows: pd.DataFrame, accuracy: float, seed: int) -> np.ndarray:
    """COVID probabilities right for about `accuracy` of the rows, spread so that they rank."""
    rng = np.random.default_rng(seed)
    right = rng.random(len(rows)) < accuracy
    positive = right == (rows.label.to_numpy() == 1)
    return np.clip(np.where(positive, 0.75, 0.25) + rng.normal(0, 0.1, len(rows)), 0, 1)


def sharpened(prob: np.ndarray, factor: float = 3.0) -> np.ndarray:
    """The probabilities of logits `factor` times as large: overconfident, the same classes."""
    logit = np.log(np.clip(prob, 1e-6, 1 - 1e-6) / np.clip(1 - prob, 1e-6, 1))
    return 1 / (1 + np.exp(-factor * logit))


def run(recipe: str, fold: str, seed: int, parts: dict, accuracy: float) -> pd.DataFrame:
    """One run's predictions table: `parts` maps each part to its images' key in IMAGES; its
    probabilities before temperature scaling (prob_raw) are the same ones, sharpened."""
    frames = []
    for k, (part, key) in enumerate(parts.items()):
        rows = IMAGES[key]
        prob = answers(rows, accuracy, zlib.crc32(f"{recipe} {fold} {seed} {k}".encode()))
        frames.append(
            rows[["path", "label", "group"]].assign(
                part=part,
                prob_raw=sharpened(prob),
                prob_covid=prob,
                nearest_seen=np.linspace(0.5, 1.0, len(rows)),
                ood_score=0.1,
                unfamiliar=pd.array([False, True] * (len(rows) // 2) + [False] * (len(rows) % 2)),
                recipe=recipe,
                fold=fold,
                seed=seed,
            )
        )
    return pd.concat(frames, ignore_index=True)


def cv_run(recipe: str, k: int, seed: int, accuracy: float) -> pd.DataFrame:
    parts = {"held_out": f"fold{k}", "test": "test", EXTERNAL: EXTERNAL}
    return run(recipe, f"fold{k}", seed, parts, accuracy)


def all_run(recipe: str, seed: int, accuracy: float) -> pd.DataFrame:
    return run(recipe, "all", seed, {"test": "test", EXTERNAL: EXTERNAL}, accuracy)


def final_cv(seeds=(0, 1), folds=(0, 1), accuracy: float = 0.85) -> pd.DataFrame:
    return pd.concat([cv_run("final", k, s, accuracy) for k in folds for s in seeds])


def accuracy_of(frame: pd.DataFrame) -> float:
    return float(((frame.prob_covid >= 0.5) == (frame.label == 1)).mean())


def per_run(frame: pd.DataFrame, metric) -> pd.Series:
    return frame.groupby(["fold", "seed"]).apply(metric)


# --- the cross-validation headline ----------------------------------------------------------


def test_the_cross_validation_mean_is_the_mean_of_the_final_recipes_held_out_runs():
    final = final_cv()
    # Other recipes, other parts and the run on all must not enter the mean.
    noise = pd.concat([cv_run("worse", 0, 0, 0.3), all_run("final", 0, 0.3)])
    cv = cross_validation(pd.concat([final, noise]), RESAMPLES)
    held = final[final.part == "held_out"]
    accuracies = per_run(held, accuracy_of)
    assert cv["accuracy"] == pytest.approx(accuracies.mean())
    assert cv["mcc"] == pytest.approx(
        per_run(held, lambda r: matthews_corrcoef(r.label, r.prob_covid >= 0.5)).mean()
    )
    assert cv["roc_auc"] == pytest.approx(
        per_run(held, lambda r: roc_auc_score(r.label, r.prob_covid)).mean()
    )
    assert (cv["folds"], cv["seeds"], cv["runs"]) == (2, [0, 1], 4)
    assert cv["n"] == held.path.nunique() and cv["groups"] == held.group.nunique()
    seeds = accuracies.groupby(level="seed").mean()
    folds = accuracies.groupby(level="fold").mean()
    assert cv["seed_sd"]["accuracy"] == pytest.approx(seeds.std(ddof=1))
    assert cv["fold_sd"]["accuracy"] == pytest.approx(folds.std(ddof=1))
    for metric in ("accuracy", "mcc", "roc_auc"):
        low, high = cv["ci95"][metric]
        assert low <= cv[metric] <= high and high - low < 0.25, metric


def test_one_seed_or_one_fold_leaves_that_spread_null():
    one_seed = cross_validation(final_cv(seeds=(0,)), RESAMPLES)
    assert set(one_seed["seed_sd"].values()) == {None}
    assert all(v > 0 for v in one_seed["fold_sd"].values())
    one_fold = cross_validation(final_cv(folds=(1,)), RESAMPLES)
    assert set(one_fold["fold_sd"].values()) == {None}
    assert all(v > 0 for v in one_fold["seed_sd"].values())
    json.dumps(one_seed, allow_nan=False)


def test_without_folds_there_is_no_cross_validation():
    assert cross_validation(all_run("final", 0, 0.9), RESAMPLES) is None


def test_scored_counts_images_runs_and_the_flagged_share():
    frame = final_cv()
    test = frame[frame.part == "test"]
    result = scored(test, 0)
    assert result["n"] == len(IMAGES["test"]) and result["runs"] == 4
    assert result["ci95"] == {}  # no resamples, no interval
    assert result["flagged_share"] == pytest.approx(test.unfamiliar.mean())
    assert result["predicted_covid_share"] == pytest.approx((test.prob_covid >= 0.5).mean())
    assert scored(test.assign(unfamiliar=pd.NA), 0)["flagged_share"] is None


def test_an_ensemble_scores_the_mean_probability_of_its_runs():
    rows = IMAGES["test"][["path", "label", "group"]]
    negative = rows.label.to_numpy() == 0
    alternate = np.arange(len(rows)) % 2 == 0
    # Each run is wrong on half the negatives, never on the same ones; their mean never is.
    one = np.where(negative, np.where(alternate, 0.6, 0.1), 0.7)
    two = np.where(negative, np.where(alternate, 0.1, 0.6), 0.7)
    frame = pd.concat(
        [
            rows.assign(prob_covid=one, fold="fold0", seed=0),
            rows.assign(prob_covid=two, fold="fold1", seed=0),
        ]
    )
    assert scored(frame, 0)["accuracy"] < 0.9
    together = ensemble(frame, RESAMPLES)
    assert together["accuracy"] == 1.0 and together["runs"] == 1
    assert together["n"] == len(rows)


# --- the shipped model, the fold models, the baselines ----------------------------------------


def test_the_shipped_model_is_scored_on_its_own_parts_and_on_the_unseen_test_images():
    shipped = all_run("final", 0, 0.9)
    other = all_run("final", 1, 0.2)  # another seed: not the shipped run
    result = shipped_model(pd.concat([shipped, other]), ("final", "all", 0), RESAMPLES, 0.8)
    assert set(result) == {"test", EXTERNAL, "test_no_near_duplicate_seen"}
    test = shipped[shipped.part == "test"]
    assert result["test"]["accuracy"] == pytest.approx(accuracy_of(test))
    assert result["test"]["n"] == len(test) and "specificity" in result["test"]
    unseen = test[test.nearest_seen < 0.8]
    assert 0 < len(unseen) < len(test)
    assert result["test_no_near_duplicate_seen"]["n"] == len(unseen)
    assert result["test_no_near_duplicate_seen"]["accuracy"] == pytest.approx(accuracy_of(unseen))
    everything_seen = shipped_model(shipped, ("final", "all", 0), 0, 0.1)
    assert everything_seen["test_no_near_duplicate_seen"] == {"n": 0}


def test_fold_models_are_the_final_recipes_fold_runs_off_their_held_out_fold():
    folds = final_cv()
    shipped = all_run("final", 0, 0.2)  # the run on all is no fold model
    result = fold_models(pd.concat([folds, shipped, cv_run("worse", 0, 0, 0.2)]), RESAMPLES)
    assert set(result) == {"test", EXTERNAL}
    test = folds[folds.part == "test"]
    assert result["test"]["mean"]["accuracy"] == pytest.approx(per_run(test, accuracy_of).mean())
    assert result["test"]["mean"]["runs"] == 4 and result["test"]["ensemble"]["runs"] == 1


def baseline_predictions(accuracy: dict) -> pd.DataFrame:
    """Each baseline's tables for every fold, as the baselines rule writes them (a `model` and
    a `fold` column); a fold's own test and external rows are wrong, since the summary must
    read those parts from the baselines fitted on all."""
    frames = []
    for model, right in accuracy.items():
        for k in (0, 1):
            frame = cv_run(model, k, 0, right)
            frame.loc[frame.part != "held_out", "prob_covid"] = 1.0 - frame.label
            frames.append(frame)
        frames.append(all_run(model, 0, right))
    return pd.concat(frames).rename(columns={"recipe": "model"}).drop(columns="seed")


def test_baselines_are_summarised_on_every_held_out_fold_and_fitted_on_all_elsewhere():
    table = baseline_predictions({"pixels_1nn": 0.7, "grey_histogram": 0.9})
    result = baselines_summary(table, RESAMPLES)
    assert list(result) == ["pixels_1nn", "grey_histogram"]
    for model in result:
        rows = table[table.model == model]
        held = rows[rows.part == "held_out"]
        summary = result[model]
        assert set(summary) == {"held_out", "test", EXTERNAL}
        assert summary["held_out"]["runs"] == 2 and summary["held_out"]["n"] == held.path.nunique()
        per_fold = held.groupby("fold").apply(accuracy_of)
        assert summary["held_out"]["accuracy"] == pytest.approx(per_fold.mean())
        test = rows[(rows.part == "test") & (rows.fold == "all")]
        assert summary["test"]["accuracy"] == pytest.approx(accuracy_of(test))
        assert summary["test"]["runs"] == 1 and summary["test"]["accuracy"] > 0.5


# --- calibration --------------------------------------------------------------------------------


def test_calibration_is_summarised_before_and_after_on_the_cv_folds_and_the_shipped_parts():
    predictions = pd.concat([final_cv(), all_run("final", 0, 0.9), all_run("worse", 0, 0.3)])
    temperatures = {("fold0", 0): 2.0, ("fold0", 1): 2.5, ("fold1", 0): 3.0, ("fold1", 1): 3.5}
    metrics = {
        ("final", fold, seed): {"calibration": {"temperature": t}}
        for (fold, seed), t in temperatures.items()
    }
    metrics[("final", "all", 0)] = {"calibration": {"temperature": 2.75}}
    result = calibration(predictions, metrics, ("final", "all", 0))
    assert set(result) == {"held_out", "test", EXTERNAL}
    held = predictions[(predictions.recipe == "final") & (predictions.part == "held_out")]
    per_run = held.groupby(["fold", "seed"]).apply(
        lambda r: pd.Series(
            {
                "ece_raw": expected_calibration_error(r.label, r.prob_raw),
                "ece": expected_calibration_error(r.label, r.prob_covid),
                "brier": np.mean((r.prob_covid - r.label) ** 2),
            }
        )
    )
    cv = result["held_out"]
    assert cv["ece_raw"] == pytest.approx(per_run.ece_raw.mean())
    assert cv["ece"] == pytest.approx(per_run.ece.mean())
    assert cv["brier"] == pytest.approx(per_run.brier.mean())
    assert (cv["runs"], cv["n"]) == (4, held.path.nunique())
    assert cv["temperature"] == pytest.approx(2.75) and cv["temperature_range"] == [2.0, 3.5]
    shipped = predictions[(predictions.recipe == "final") & (predictions.fold == "all")]
    test = shipped[shipped.part == "test"]
    assert result["test"]["ece"] == pytest.approx(
        expected_calibration_error(test.label, test.prob_covid)
    )
    assert result["test"]["brier_raw"] == pytest.approx(np.mean((test.prob_raw - test.label) ** 2))
    assert result["test"]["temperature"] == 2.75 and result["test"]["runs"] == 1
    # Runs whose metrics hold no temperature (files from before it): None, not a number
    unknown = calibration(predictions, {}, ("final", "all", 0))
    assert unknown["test"]["temperature"] is None and unknown["held_out"]["temperature"] is None
    json.dumps(json_safe(result), allow_nan=False)


# --- the ablation -----------------------------------------------------------------------------


def test_ablation_points_are_final_minus_variant_and_only_a_real_difference_stands_out():
    final = final_cv(accuracy=0.9)
    same = final.assign(recipe="same")
    worse = final_cv(accuracy=0.6).assign(recipe="worse")
    variants = {"same": {"augment": True}, "worse": {"depth": 1, "lr": 0.01}}
    table = ablation_table(pd.concat([final, same, worse]), variants, RESAMPLES, True)
    assert list(table.scored_on) == ["held-out folds"] * 3 + ["external set scanner_b"] * 3
    assert list(table.variant) == ["final", "same", "worse"] * 2
    rows = table[table.scored_on == "held-out folds"].set_index("variant")
    assert rows.loc["worse", "changes"] == "depth=1, lr=0.01" and rows.runs.tolist() == [4] * 3
    held = final[final.part == "held_out"]
    held_worse = worse[worse.part == "held_out"]
    expected = 100 * (per_run(held, accuracy_of).mean() - per_run(held_worse, accuracy_of).mean())
    assert rows.loc["worse", "accuracy_points"] == pytest.approx(expected)
    assert rows.loc["worse", "mcc_points"] == pytest.approx(
        100 * (rows.loc["final", "mcc"] - rows.loc["worse", "mcc"])
    )
    assert rows.loc["worse", "distinguishable"] and rows.loc["worse", "accuracy_points_low"] > 0
    assert rows.loc["same", "accuracy_points"] == 0 and not rows.loc["same", "distinguishable"]
    assert rows.loc["final", "accuracy_low"] <= rows.loc["final", "accuracy"]
    assert rows.loc["final", "accuracy"] <= rows.loc["final", "accuracy_high"]


def test_an_ablation_on_all_compares_the_shipped_run_on_the_locked_test():
    final = pd.concat([final_cv(accuracy=0.6), all_run("final", 0, 0.95)])
    variant = all_run("no_cutmix", 0, 0.6)
    table = ablation_table(pd.concat([final, variant]), {"no_cutmix": {"cutmix": 0}}, 100, False)
    assert list(table.scored_on) == [
        "locked test",
        "locked test",
        "external set scanner_b",
        "external set scanner_b",
    ]
    rows = table[table.scored_on == "locked test"].set_index("variant")
    assert rows.runs.tolist() == [1, 1]  # the fold runs are not the final recipe on all
    test = final[(final.fold == "all") & (final.part == "test")]
    assert rows.loc["final", "accuracy"] == pytest.approx(accuracy_of(test))
    assert rows.loc["no_cutmix", "accuracy_points"] > 20
    assert rows.loc["no_cutmix", "distinguishable"]


# --- the sweep and the choice of a combination -----------------------------------------------

GRID = ["patch_size", "heads"]


def grid_metrics(patch, heads, fold="all", mcc=0.8, loss=0.5, parameters=1000, val=25) -> dict:
    """A grid run's train_metrics.json, as the train step writes it."""
    return {
        "recipe": f"patch_size~{patch}_heads~{heads}",
        "fold": fold,
        "seed": 0,
        "changes": {"patch_size": patch, "heads": heads, "seed": 0},
        "chosen": None,
        "best_epoch": 3,
        "parameters": parameters,
        "images": {"train": 4 * val, "val": val},
        "val_mcc": mcc,
        "val_accuracy": 0.9,
        "val_loss": loss,
    }


def best_of(*metrics: dict) -> dict:
    return pick_best(sweep_table(sweep_runs(list(metrics), GRID), GRID), GRID, "mcc")


def test_sweep_runs_and_table_have_a_row_per_run_and_per_combination():
    metrics = [grid_metrics(p, h, f"fold{k}") for p in (8, 16) for h in (1, 2) for k in (0, 1)]
    runs = sweep_runs(metrics, GRID)
    assert len(runs) == 8 and list(runs.columns[:5]) == [*GRID, "fold", "best_epoch", "parameters"]
    assert {"val_mcc", "val_loss", "recipe"} <= set(runs.columns) and "seed" not in runs
    table = sweep_table(runs, GRID)
    assert len(table) == 4 and list(table.folds) == [2] * 4
    assert table[GRID].values.tolist() == [[8, 1], [8, 2], [16, 1], [16, 2]]  # grid order
    assert "val_mcc_se" in table and "val_mcc_se" not in sweep_table(
        runs[runs.fold == "fold0"], GRID
    )


def test_the_highest_validation_metric_wins():
    best = best_of(grid_metrics(8, 1, mcc=0.7), grid_metrics(16, 1, mcc=0.8), grid_metrics(16, 2))
    assert best["params"] == {"patch_size": 16, "heads": 1} and best["rule"] == "highest"
    assert best["recipe"] == "patch_size~16_heads~1" and best["value"] == 0.8


def test_ties_go_to_the_lower_loss_then_fewer_parameters_then_grid_order():
    lower_loss = best_of(grid_metrics(8, 1, loss=0.5), grid_metrics(16, 1, loss=0.4))
    assert lower_loss["params"]["patch_size"] == 16
    smaller = best_of(grid_metrics(8, 1, parameters=900), grid_metrics(16, 1, parameters=800))
    assert smaller["params"]["patch_size"] == 16
    first = best_of(grid_metrics(16, 2), grid_metrics(8, 1), grid_metrics(8, 2))
    assert first["params"] == {"patch_size": 16, "heads": 2}


def test_over_folds_the_smallest_model_within_one_standard_error_of_the_best_mean_wins():
    scores = {  # (patch, heads, parameters): mcc per fold
        (8, 1, 900): [0.82, 0.80, 0.84],  # best mean 0.82, standard error 0.0115
        (16, 1, 500): [0.81, 0.80, 0.82],  # mean 0.81: within one standard error, smaller
        (32, 1, 300): [0.70, 0.72, 0.71],  # smallest, but far below
    }
    metrics = [
        grid_metrics(p, h, f"fold{k}", mcc=m, parameters=n)
        for (p, h, n), per_fold in scores.items()
        for k, m in enumerate(per_fold)
    ]
    table = sweep_table(sweep_runs(metrics, GRID), GRID)
    assert table.val_mcc_se[0] == pytest.approx(0.02 / 3**0.5)
    best = pick_best(table, GRID, "mcc")
    assert best["params"] == {"patch_size": 16, "heads": 1}
    assert best["value"] == pytest.approx(0.81) and best["folds"] == 3
    assert best["rule"].startswith("fewest parameters within one standard error")
    assert best["standard_error"] == pytest.approx(0.01 / 3**0.5)


def test_choose_recipe_reads_the_choice_runs_files_and_says_what_it_chose_on(tmp_path):
    paths = []
    for k, mccs in enumerate([(0.6, 0.9), (0.62, 0.88)]):
        for heads, mcc in zip((1, 2), mccs, strict=True):
            path = tmp_path / f"fold{k}_{heads}.json"
            path.write_text(json.dumps(grid_metrics(8, heads, f"fold{k}", mcc=mcc, val=20 + k)))
            paths.append(path)
    chosen = choose_recipe(paths, GRID, "mcc")
    assert chosen["params"] == {"patch_size": 8, "heads": 2}
    assert type(chosen["params"]["heads"]) is int  # plain Python, not numpy: JSON takes it
    assert (
        chosen["chosen_on"] == ["fold0", "fold1"] and chosen["chosen_on_images"] == 20 + 21
    )  # each split once
    assert chosen["selection_metric"] == "val_mcc"
    json.dumps(chosen, allow_nan=False)
    with pytest.raises(ValueError, match="no grid run"):
        choose_recipe([], GRID, "mcc")


# --- which data chose what ----------------------------------------------------------------------


def plan_of(nested=True, strategy="grouped", folds=("fold0", "fold1")) -> dict:
    return {
        "shipped": "results/runs/final/all/seed0",
        "folds": list(folds),
        "seeds": [0, 1],
        "nested": nested,
        "variants": {"no_cutmix": {"cutmix": 0.0}},
        "grid": GRID,
        "grid_recipes": ["patch_size~8_heads~1", "patch_size~8_heads~2"],
        "sources": ["main"],
        "site": None,
        "external": ["scanner_b"],
        "metric": "mcc",
        "strategy": strategy,
        "threshold": 0.9,
        "cross_validate": False,
    }


def test_protocol_marks_the_cv_mean_optimistic_when_the_grid_was_not_nested():
    grid = pd.DataFrame({"fold": ["all"] * 3})
    metrics = {
        ("final", "fold0", 1): {"chosen": {"params": {"heads": 2}}},
        ("final", "all", 0): {"chosen": {"params": {"heads": 1}}},
        ("no_cutmix", "all", 0): {"chosen": {"params": {"heads": 1}}},
    }
    flat = protocol(plan_of(nested=False), metrics, grid)
    assert len(flat["optimistic"]) == 1 and "sweep.nested: false" in flat["optimistic"][0]
    assert "the grid runs on all non-test images" in flat["recipe"]
    assert flat["grid_runs"] == 3
    assert flat["chosen"] == {"shipped model, seed 0": {"heads": 1}, "fold0, seed 1": {"heads": 2}}
    nested = protocol(plan_of(nested=True), metrics, grid)
    assert nested["optimistic"] == [] and "one-standard-error rule" in nested["recipe"]
    # Without folds there is no cross-validation mean to be optimistic about.
    assert protocol(plan_of(nested=False, folds=()), metrics, grid)["optimistic"] == []


def test_protocol_marks_a_random_locked_test_optimistic():
    result = protocol(plan_of(strategy="random"), {}, pd.DataFrame())
    assert len(result["optimistic"]) == 1
    assert "the locked test" in result["optimistic"][0]
    assert "split.strategy: random" in result["optimistic"][0]


# --- the whole headline -----------------------------------------------------------------------


def experiment() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Predictions, baselines and metrics of a small nested run: a 2x1 grid per fold, the final
    recipe on two folds x two seeds and on all, one variant on all."""
    predictions = pd.concat(
        [final_cv(), all_run("final", 0, 0.88), all_run("no_cutmix", 0, 0.8)],
        ignore_index=True,
    )
    baselines = baseline_predictions({"pixels_1nn": 0.7, "grey_histogram": 0.9})
    metrics = {}
    for fold in ("fold0", "fold1"):
        for heads, mcc in ((1, 0.7), (2, 0.75)):
            m = grid_metrics(8, heads, fold, mcc=mcc)
            metrics[(m["recipe"], fold, 0)] = m
    chosen = {"params": {"patch_size": 8, "heads": 2}}
    for recipe, fold, seed in [
        *(("final", f"fold{k}", s) for k in (0, 1) for s in (0, 1)),
        ("final", "all", 0),
        ("no_cutmix", "all", 0),
    ]:
        metrics[(recipe, fold, seed)] = {
            "recipe": recipe,
            "fold": fold,
            "seed": seed,
            "chosen": chosen,
            "best_epoch": 7,
        }
    return predictions, baselines, metrics


def test_the_headline_holds_every_summary_and_is_strict_json():
    predictions, baselines, metrics = experiment()
    result = headline(predictions, baselines, metrics, plan_of(), RESAMPLES)
    text = json.dumps(result, allow_nan=False)  # NaN is not JSON: strict readers refuse it
    assert json.loads(text)["shipped"]["run"] == {"recipe": "final", "fold": "all", "seed": 0}
    assert set(result) == {
        "protocol",
        "cv",
        "shipped",
        "fold_models",
        "baselines",
        "calibration",
        "test_inside_cv_interval",
    }
    assert result["cv"]["folds"] == 2 and result["cv"]["runs"] == 4
    assert set(result["shipped"]) == {"run", "test", EXTERNAL, "test_no_near_duplicate_seen"}
    assert result["shipped"]["test"]["n"] == len(IMAGES["test"])
    assert set(result["fold_models"]) == {"test", EXTERNAL}
    assert set(result["baselines"]) == {"pixels_1nn", "grey_histogram"}
    assert result["protocol"]["grid_runs"] == 4 and result["protocol"]["optimistic"] == []
    low, high = result["cv"]["ci95"]["accuracy"]
    inside = low <= result["shipped"]["test"]["accuracy"] <= high
    assert result["test_inside_cv_interval"] is inside


def test_unseen_test_images_of_one_class_leave_the_headline_strict_json():
    predictions, baselines, metrics = experiment()
    test = (predictions.part == "test") & (predictions.recipe == "final")
    # Only the non-COVID test images have no near-copy among the seen slices.
    predictions.loc[test, "nearest_seen"] = np.where(predictions.label[test] == 0, 0.5, 0.99)
    result = headline(predictions, baselines, metrics, plan_of(), 0)
    assert result["shipped"]["test_no_near_duplicate_seen"]["n"] > 0
    json.dumps(result, allow_nan=False)


def test_run_key_reads_a_run_folder():
    assert run_key("results/runs/no_cutmix/fold3/seed12") == ("no_cutmix", "fold3", 12)


# --- the run and fold tables ------------------------------------------------------------------


def test_run_table_has_a_row_per_run_and_part_with_its_epoch():
    predictions, _, metrics = experiment()
    runs = run_table(predictions, metrics)
    # 4 fold runs x 3 parts, then 2 runs on all x 2 parts
    assert len(runs) == 16
    assert list(runs.columns[:5]) == ["recipe", "fold", "seed", "part", "n"]
    first = runs[(runs.fold == "fold0") & (runs.seed == 1) & (runs.part == "held_out")].iloc[0]
    rows = predictions[
        (predictions.fold == "fold0") & (predictions.seed == 1) & (predictions.part == "held_out")
    ]
    assert first.accuracy == pytest.approx(accuracy_of(rows)) and first.n == len(rows)
    assert first.flagged_share == pytest.approx(rows.unfamiliar.mean())
    assert (runs.best_epoch == 7).all()
    assert run_table(predictions, {}).best_epoch.isna().all()


def test_fold_table_has_a_row_per_fold_and_the_seed_range_with_several_seeds():
    predictions, _, metrics = experiment()
    runs = run_table(predictions, metrics)
    folds = fold_table(runs)
    assert list(folds.fold) == ["fold0", "fold1"]
    assert list(folds.columns[:2]) == ["fold", "images"]
    assert list(folds.images) == [len(IMAGES["fold0"]), len(IMAGES["fold1"])]
    held = runs[(runs.part == "held_out") & (runs.fold == "fold0")]
    assert folds.accuracy_mean[0] == pytest.approx(held.accuracy.mean())
    assert folds.accuracy_seed_range[0] == pytest.approx(held.accuracy.max() - held.accuracy.min())
    one_seed = fold_table(runs[runs.seed == 0])
    assert "accuracy_seed_range" not in one_seed and len(one_seed) == 2
