"""The cross-validation protocol's tables, headline and figure from every (fold, seed) run."""

import json
import logging
from pathlib import Path

import pandas as pd

from vitct import step
from vitct.crossval import fold_table, headline, run_table
from vitct.figures import plot_cv_runs
from vitct.outputs import write_text


def main(snakemake):
    runs = run_table([json.loads(Path(p).read_text()) for p in snakemake.input.metrics])
    predictions = pd.concat(
        [pd.read_csv(p, sep="\t", keep_default_na=False) for p in snakemake.input.predictions],
        ignore_index=True,
    )
    result = headline(predictions, snakemake.params.bootstrap)
    result["baselines"] = json.loads(Path(snakemake.input.baselines).read_text())["mean"]
    final = json.loads(Path(snakemake.input.final_metrics).read_text())
    result["final_test"] = {m: final[m] for m in ("accuracy", "mcc", "roc_auc", "n") if m in final}
    result["final_test_ci95"] = final.get("ci95", {})
    low, high = result["cv_ci95"]["accuracy"]
    result["final_test_inside_cv_interval"] = bool(low <= final["accuracy"] <= high)
    table = {"sep": "\t", "index": False, "float_format": "%.6g"}
    write_text(snakemake.output.runs, runs.to_csv(**table))
    write_text(snakemake.output.folds, fold_table(runs).to_csv(**table))
    write_text(snakemake.output.headline, json.dumps(result, indent=2, sort_keys=True))
    plot_cv_runs(runs, result, snakemake.output.figure, final["accuracy"])
    logging.info(
        "CV accuracy %.4f [%.4f, %.4f] over %d folds x %d seeds (seed sd %s); locked test "
        "%.4f (final model), %.4f (ensemble of fold models)",
        result["cv"]["accuracy"],
        low,
        high,
        result["folds"],
        len(result["seeds"]),
        "n/a" if (sd := result["seed_sd"]["accuracy"]) is None else f"{sd:.4f}",
        final["accuracy"],
        result["ensemble_test"]["accuracy"],
    )


step.run(snakemake, main)  # noqa: F821
