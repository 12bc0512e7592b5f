"""Gather every combination's validation metrics, pick the best, draw the grid."""

import json
import logging

from vitct import step
from vitct.figures import plot_grid
from vitct.outputs import write_text
from vitct.sweep import pick_best, summarise


def main(snakemake):
    params = list(snakemake.params.grid)
    metric = snakemake.params.metric
    summary = summarise(snakemake.input.metrics, params)
    write_text(snakemake.output.summary, summary.to_csv(sep="\t", index=False, float_format="%.6g"))
    best = pick_best(summary, params, metric)
    write_text(snakemake.output.best, json.dumps(best, indent=2))
    plot_grid(summary, params, f"val_{metric}", snakemake.output.figure)
    logging.info(
        "best of %d combinations: %s (%s = %.4f)",
        len(summary),
        best["params"],
        best["selection_metric"],
        best["value"],
    )


step.run(snakemake, main)  # noqa: F821
