"""Every table and figure of the report, from the runs' predictions and metrics
(vitct.evaluation.summaries): the cross-validation headline, the shipped model beside the fold
models and the baselines, calibration before and after temperature scaling, the sweep, the
ablation, and which data chose what."""

import json
import logging
from pathlib import Path

import pandas as pd

from vitct.atomic_files import write_text
from vitct.evaluation import figures, selection, summaries
from vitct.evaluation.scoring import TEST, read_predictions
from vitct.pipeline import harness


def main(snakemake):
    plan, inputs, out = snakemake.params.plan, snakemake.input, snakemake.output
    n_resamples = snakemake.params.bootstrap
    predictions = summaries.read_runs(inputs.predictions, read_predictions)
    metrics = {}
    for path in inputs.metrics:
        m = json.loads(Path(path).read_text())
        metrics[(m["recipe"], m["fold"], m["seed"])] = m
    baselines = pd.concat(
        [read_predictions(p).assign(fold=Path(p).parent.name) for p in inputs.baselines],
        ignore_index=True,
    )
    result = summaries.headline(predictions, baselines, metrics, plan, n_resamples)
    write_text(out.headline, json.dumps(result, indent=2, sort_keys=True, allow_nan=False))
    table = {"sep": "\t", "index": False, "float_format": "%.6g"}
    runs = summaries.run_table(predictions, metrics)
    write_text(out.runs, runs.to_csv(**table))
    write_text(out.folds, summaries.fold_table(runs).to_csv(**table))
    grid_runs = selection.sweep_runs(
        [m for m in metrics.values() if m["recipe"] in plan["grid_recipes"]], plan["grid"]
    )
    sweep = selection.sweep_table(grid_runs, plan["grid"])
    write_text(out.sweep, sweep.to_csv(**table))
    figures.plot_grid(sweep, plan["grid"], f"val_{plan['metric']}", out.sweep_figure)
    ablation = pd.DataFrame()
    if plan["variants"]:
        ablation = summaries.ablation_table(
            predictions, plan["variants"], n_resamples, plan["cross_validate"]
        )
        figures.plot_ablation(ablation, out.ablation_figure)
    write_text(out.ablation, ablation.to_csv(**table))
    loso = pd.DataFrame()
    if len(plan["sources"]) > 1:
        loso = summaries.leave_one_source_out(predictions, n_resamples)
    write_text(out.loso, loso.to_csv(**table))
    curve = pd.DataFrame()
    if "curve_figure" in out.keys():
        shipped_key = summaries.run_key(plan["shipped"])
        curve = summaries.learning_curve(predictions, shipped_key, plan["site"], n_resamples)
        figures.plot_learning_curve(curve, plan["site"], out.curve_figure)
    write_text(out.curve, curve.to_csv(**table))
    shipped = predictions[summaries.is_run(predictions, summaries.run_key(plan["shipped"]))]
    test = shipped[shipped.part == TEST]
    figures.plot_confusion(test.label, (test.prob_covid >= 0.5).astype(int), out.confusion)
    figures.plot_roc(test.label, test.prob_covid, out.roc)
    sets = {
        part: (f.label, f.prob_raw, f.prob_covid) for part, f in shipped.groupby("part", sort=False)
    }
    temperature = result["calibration"].get(TEST, {}).get("temperature")
    figures.plot_reliability(sets, out.reliability, temperature)
    if result["cv"]:
        figures.plot_cv_runs(runs, result["cv"], out.cv_figure, result["shipped"][TEST]["accuracy"])
        cv = result["cv"]
        logging.info(
            "cross-validation accuracy %.4f %s over %d folds x %d seeds",
            cv["accuracy"],
            cv["ci95"].get("accuracy"),
            cv["folds"],
            len(cv["seeds"]),
        )
    logging.info(
        "shipped model on the locked test: accuracy %.4f", result["shipped"][TEST]["accuracy"]
    )
    calibrated = result["calibration"][TEST]
    logging.info(
        "shipped model on the locked test: ECE %.4f -> %.4f, Brier %.4f -> %.4f (T = %s)",
        *(calibrated[k] for k in ("ece_raw", "ece", "brier_raw", "brier", "temperature")),
    )


harness.run(snakemake, main)  # noqa: F821
