"""Near-duplicate groups, the locked test split (under both strategies; the config picks the one
used) and the grouped folds of the other images; every run's inner validation split is checked
here, so a part without a class stops the run before any training.

partition.json says what came out: the groups, the images per part, and a memorisation check
under each strategy (the share of test images with a near-copy outside the test split, and how
well the 1-NN on pixels, which can only memorise, does on them).
"""

import json
import logging

import pandas as pd

from vitct.atomic_files import write_text
from vitct.data.cache import load_cache
from vitct.data.duplicates import group_statistics, near_duplicate_groups, nearest_train
from vitct.data.partition import (
    STRATEGIES,
    SplitError,
    assign_folds,
    check_runs,
    locked_test,
    part_summary,
)
from vitct.evaluation.metrics import binary_metrics
from vitct.pipeline import harness


def memorisation(table: pd.DataFrame, thumbnails, test: pd.Series, threshold: float) -> dict:
    """Under one split: the share of test images whose most similar slice outside the test
    split is a near-duplicate, and the 1-NN on pixels' accuracy on the test images."""
    seen, scored = (~test).to_numpy(), test.to_numpy()
    nearest, similarity = nearest_train(thumbnails[seen], thumbnails[scored])
    predicted = table.label.to_numpy()[seen][nearest]
    truth = table.label.to_numpy()[scored]
    return {
        "test_images": int(scored.sum()),
        "test_with_near_duplicate_outside": float((similarity >= threshold).mean()),
        "pixels_1nn_test_accuracy": binary_metrics(truth, predicted)["accuracy"],
    }


def main(snakemake):
    table = pd.read_csv(snakemake.input.manifest, sep="\t", keep_default_na=False)
    cache = load_cache(snakemake.input.cache)
    split, n_folds = snakemake.params.split, snakemake.params.folds
    threshold = split["near_duplicate_threshold"]
    by_path = dict(zip(cache["paths"], range(len(cache["paths"])), strict=True))
    thumbnails = cache["thumbnails"][[by_path[p] for p in table.path]]
    table["near_duplicate_group"] = near_duplicate_groups(thumbnails, threshold)
    checks = {}
    for strategy in STRATEGIES:
        try:
            test = locked_test(table, split["test"], split["seed"], strategy)
        except SplitError as e:
            if strategy != split["strategy"]:  # only the strategy in use must deal
                logging.warning("split strategy %s (not used): %s", strategy, e)
                continue
            raise
        table[f"test_{strategy}"] = test
        checks[strategy] = memorisation(table, thumbnails, test, threshold)
    table["test"] = table[f"test_{split['strategy']}"]
    table["fold"] = assign_folds(table, n_folds, split["seed"])
    check_runs(table, snakemake.params.run_folds, split["val"], split["seed"])
    write_text(snakemake.output.partition, table.to_csv(sep="\t", index=False))
    summary = {
        "strategy": split["strategy"],
        "groups": group_statistics(table.near_duplicate_group.to_numpy()),
        "test_images": int(table.test.sum()),
        "pool_images": int((~table.test).sum()),
        "folds": {
            int(k): int(n) for k, n in table[~table.test].fold.value_counts().sort_index().items()
        },
        "memorisation": checks,
    }
    write_text(snakemake.output.summary, json.dumps(summary, indent=2))
    logging.info("near-duplicate groups: %s", summary["groups"])
    logging.info("images per fold and class (-1: locked test):\n%s", part_summary(table, "fold"))
    for strategy, check in checks.items():
        logging.info("%s split: %s", strategy, check)


harness.run(snakemake, main)  # noqa: F821
