"""The two baselines the ViT must beat, under both split strategies: 1-nearest-neighbour on
32x32 pixels (memorisation) and gradient boosting on grey-level histograms at each scan's own
resolution (no shape at all)."""

import json
import logging

import pandas as pd

from vitct import step
from vitct.data import load_cache
from vitct.intensity import histogram_baseline, load_histograms
from vitct.neighbours import group_statistics, nearest_seen, pixel_baseline
from vitct.outputs import write_text
from vitct.split import STRATEGIES


def main(snakemake):
    cache = load_cache(snakemake.input.cache)
    table = pd.read_csv(snakemake.input.split, sep="\t", keep_default_na=False)
    threshold, seed = snakemake.params.threshold, snakemake.params.seed
    neighbours = {s: nearest_seen(cache, table, f"split_{s}") for s in STRATEGIES}
    histograms = load_histograms(snakemake.input.grey_histograms, cache["paths"])
    result = {
        "used_strategy": snakemake.params.strategy,
        "groups": group_statistics(table.near_duplicate_group.to_numpy()),
        "nearest_neighbour": {
            s: pixel_baseline(cache, neighbours[s], threshold) for s in STRATEGIES
        },
        "grey_histogram": {
            s: histogram_baseline(histograms, cache["y"], neighbours[s], threshold, seed)
            for s in STRATEGIES
        },
    }
    write_text(snakemake.output.baselines, json.dumps(result, indent=2))
    for s in STRATEGIES:
        logging.info(
            "%s split: 1-NN test accuracy %.4f, grey-histogram test accuracy %.4f; %.1f%% of "
            "test images have a near-duplicate training slice",
            s,
            result["nearest_neighbour"][s]["all_test"]["accuracy"],
            result["grey_histogram"][s]["all_test"]["accuracy"],
            100 * result["nearest_neighbour"][s]["test_with_near_duplicate_in_train"],
        )


step.run(snakemake, main)  # noqa: F821
