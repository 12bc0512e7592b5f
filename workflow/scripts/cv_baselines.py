"""The two baselines under the cross-validation folds: fitted on the other folds, scored on
each held-out fold, so they compare with the ViT's cross-validation mean."""

import json
import logging

import numpy as np
import pandas as pd

from vitct import step
from vitct.data import load_cache
from vitct.folds import TEST_FOLD
from vitct.intensity import histogram_baseline, load_histograms
from vitct.neighbours import nearest_seen, pixel_baseline
from vitct.outputs import write_text

BASELINES = ("nearest_neighbour", "grey_histogram")


def main(snakemake):
    cache = load_cache(snakemake.input.cache)
    table = pd.read_csv(snakemake.input.folds, sep="\t", keep_default_na=False)
    pool = table[table.fold != TEST_FOLD].reset_index(drop=True)  # the test split never
    histograms = load_histograms(snakemake.input.grey_histograms, cache["paths"])
    threshold, seed = snakemake.params.threshold, snakemake.params.seed
    per_fold = {}
    for fold in sorted(pool.fold.unique()):
        held_out = pool.assign(role=np.where(pool.fold == fold, "test", "train"))
        neighbours = nearest_seen(cache, held_out, "role")
        scored = {
            "nearest_neighbour": pixel_baseline(cache, neighbours, threshold),
            "grey_histogram": histogram_baseline(
                histograms, cache["y"], neighbours, threshold, seed
            ),
        }
        per_fold[int(fold)] = {
            name: {m: scored[name]["all_test"][m] for m in ("accuracy", "mcc", "roc_auc")}
            for name in BASELINES
        }
    mean = {
        name: {
            m: float(np.nanmean([f[name][m] for f in per_fold.values()]))
            for m in ("accuracy", "mcc", "roc_auc")
        }
        for name in BASELINES
    }
    write_text(
        snakemake.output.baselines,
        json.dumps({"per_fold": per_fold, "mean": mean}, indent=2, sort_keys=True),
    )
    for name in BASELINES:
        logging.info(
            "%s under the folds: mean held-out accuracy %.4f", name, mean[name]["accuracy"]
        )


step.run(snakemake, main)  # noqa: F821
