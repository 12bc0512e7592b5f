"""The memorisation baseline: 1-nearest-neighbour on 32x32 pixels, under both split strategies."""

import json
import logging
from pathlib import Path

import pandas as pd

from vitct import step
from vitct.data import load_cache
from vitct.neighbours import group_statistics, pixel_baseline
from vitct.split import STRATEGIES


def main(snakemake):
    cache = load_cache(snakemake.input.cache)
    table = pd.read_csv(snakemake.input.split, sep="\t", keep_default_na=False)
    threshold = snakemake.params.threshold
    result = {
        "used_strategy": snakemake.params.strategy,
        "groups": group_statistics(table.near_duplicate_group.to_numpy()),
        **{s: pixel_baseline(cache, table, f"split_{s}", threshold) for s in STRATEGIES},
    }
    Path(snakemake.output.baseline).write_text(json.dumps(result, indent=2))
    for s in STRATEGIES:
        logging.info(
            "%s split: 1-NN test accuracy %.4f; %.1f%% of test images have a near-duplicate "
            "training slice",
            s,
            result[s]["all_test"]["accuracy"],
            100 * result[s]["test_with_near_duplicate_in_train"],
        )


step.run(snakemake, main)  # noqa: F821
