"""Near-duplicate groups, the locked test split (under both strategies; the config picks the one
used) and the grouped folds of the other images; every run's inner validation split is checked
here, so a part without a class stops the run before any training.

partition.json says what came out: the groups, the images per part, and a memorisation check
under each strategy (the share of test images with a near-copy outside the test split, and how
well the 1-NN on pixels, which can only memorise, does on them).
"""

import json
import logging

import numpy as np
import pandas as pd

from vitct.atomic_files import write_text
from vitct.data.cache import load_cache, rows_of
from vitct.data.duplicates import group_statistics, near_duplicate_groups, nearest_train
from vitct.data.partition import (
    STRATEGIES,
    SplitError,
    assign_folds,
    check_runs,
    locked_test,
    part_summary,
)
from vitct.data.site import EVAL, POOL, site_parts
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


def read_set(manifest_path, cache_path, threshold: float) -> pd.DataFrame:
    """A data set's manifest with each image's thumbnail (from its cache) and near-duplicate
    group (within the set)."""
    table = pd.read_csv(manifest_path, sep="\t", keep_default_na=False)
    cache = load_cache(cache_path)
    table["thumbnail"] = list(cache["thumbnails"][rows_of(cache["paths"], table.path, cache_path)])
    table["near_duplicate_group"] = near_duplicate_groups(
        np.stack(table.thumbnail), threshold, table.get("patient")
    )
    return table


def main(snakemake):
    params, inputs = snakemake.params, snakemake.input
    split, n_folds = params.split, params.folds
    threshold = split["near_duplicate_threshold"]
    sets = {
        name: read_set(manifest, cache, threshold)
        for name, manifest, cache in zip(params.sets, inputs.manifests, inputs.caches, strict=True)
    }
    site = None
    if params.site:
        site = sets[params.site]
        site["part"] = site_parts(site, params.adaptation["pool"], split["seed"])
    site_columns = ["path", "label", "near_duplicate_group", "part"]
    site_table = site[site_columns] if site is not None else pd.DataFrame(columns=site_columns)
    write_text(snakemake.output.site, site_table.to_csv(sep="\t", index=False))
    frames = []
    for name, data_set, prefix in zip(
        params.sources["names"], params.sources["sets"], params.sources["prefixes"], strict=True
    ):
        frame = sets[data_set]
        if data_set == params.site:  # the site as a training source: its pool alone
            frame = frame[frame.part == POOL].drop(columns="part")
        frames.append(
            frame.drop(columns="near_duplicate_group").assign(path=prefix + frame.path, source=name)
        )
    table = pd.concat(frames, ignore_index=True)
    thumbnails = np.stack(table.pop("thumbnail"))
    # Groups over every source at once: a slice of one source copied into another is caught.
    patients = None  # per source: the same id in two sources is not one patient
    if "patient" in table:
        known = table.patient.fillna("").astype(str)
        patients = np.where(known != "", table.source + ":" + known, "")
    table["near_duplicate_group"] = near_duplicate_groups(thumbnails, threshold, patients)
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
    check_runs(table, params.run_folds, split["val"], split["seed"])
    write_text(snakemake.output.partition, table.to_csv(sep="\t", index=False))
    summary = {
        "strategy": split["strategy"],
        "groups": group_statistics(table.near_duplicate_group.to_numpy()),
        "sources": {name: int(n) for name, n in table.source.value_counts().items()},
        "test_images": int(table.test.sum()),
        "pool_images": int((~table.test).sum()),
        "folds": {
            int(k): int(n) for k, n in table[~table.test].fold.value_counts().sort_index().items()
        },
        "memorisation": checks,
    }
    if site is not None:
        summary["site"] = {
            "name": params.site,
            "pool": int((site.part == POOL).sum()),
            "eval": int((site.part == EVAL).sum()),
            "groups": int(site.near_duplicate_group.nunique()),
        }
    write_text(snakemake.output.summary, json.dumps(summary, indent=2))
    logging.info("near-duplicate groups: %s", summary["groups"])
    logging.info("images per fold and class (-1: locked test):\n%s", part_summary(table, "fold"))
    if len(summary["sources"]) > 1:
        logging.info("images per source and class:\n%s", part_summary(table, "source"))
    for strategy, check in checks.items():
        logging.info("%s split: %s", strategy, check)
    if site is not None:
        logging.info("adaptation site %s: %s", params.site, summary["site"])


harness.run(snakemake, main)  # noqa: F821
