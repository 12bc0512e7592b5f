"""Test-set metrics (COVID positive) with bootstrap intervals, predictions and figures."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from vitct import step
from vitct.artifact import load_artifact
from vitct.data import CLASS_NAMES, load_cache
from vitct.figures import plot_confusion, plot_roc
from vitct.metrics import binary_metrics, bootstrap_intervals
from vitct.train import predict_proba


def main(snakemake):
    model, meta = load_artifact(snakemake.input.model)
    cache = load_cache(snakemake.input.cache)
    pre = meta["preprocessing"]
    prob = predict_proba(model, cache["test_x"], pre["mean"], pre["std"])
    y = cache["test_y"]
    metrics = {"positive_class": "COVID", **binary_metrics(y, prob)}
    if snakemake.params.bootstrap:
        metrics["ci95"] = bootstrap_intervals(y, prob, snakemake.params.bootstrap)
    metrics["data"] = meta["data"]
    Path(snakemake.output.metrics).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    pred = (prob >= 0.5).astype(int)
    pd.DataFrame({
        "path": cache["test_paths"], "label": [CLASS_NAMES[i] for i in y],
        "predicted": [CLASS_NAMES[i] for i in pred], "prob_covid": np.round(prob, 6),
        "correct": pred == y,
    }).to_csv(snakemake.output.predictions, index=False)  # fmt: skip
    plot_confusion(y, pred, snakemake.output.confusion)
    plot_roc(y, prob, snakemake.output.roc)
    logging.info("test: %s", {k: round(v, 4) for k, v in metrics.items()
                              if isinstance(v, float)})  # fmt: skip


step.run(snakemake, main)  # noqa: F821
