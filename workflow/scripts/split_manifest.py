"""Stratified train/val/test split under both strategies; the config picks the one used.

random: exact copies stay together. grouped: near-duplicate slices (cosine of 32x32 thumbnails
>= threshold, chained) stay together, which is as close to a patient split as the data allow.
"""

import logging

import pandas as pd

from vitct import step
from vitct.data import load_cache
from vitct.neighbours import group_statistics, near_duplicate_groups
from vitct.outputs import write_text
from vitct.split import STRATEGIES, SplitError, assign_splits, check_split, split_summary


def main(snakemake):
    manifest = pd.read_csv(snakemake.input.manifest, sep="\t", keep_default_na=False)
    cache = load_cache(snakemake.input.cache)
    assert list(cache["paths"]) == list(manifest.path), "cache and manifest disagree"
    cfg = snakemake.params.split
    groups = near_duplicate_groups(cache["thumbnails"], cfg["near_duplicate_threshold"])
    manifest["near_duplicate_group"] = groups
    group_of = {"random": "sha256", "grouped": "near_duplicate_group"}
    for strategy in STRATEGIES:
        column = group_of[strategy]
        split = assign_splits(manifest, cfg["fractions"], cfg["seed"], group_column=column)
        # Both strategies are used (the baselines score both): each must fill every split.
        try:
            check_split(manifest, split, cfg["fractions"], cfg["seed"], column)
        except SplitError as e:
            raise SplitError(f"split strategy {strategy}: {e}") from None
        manifest[f"split_{strategy}"] = split
    manifest["split"] = manifest[f"split_{cfg['strategy']}"]
    write_text(snakemake.output.split, manifest.to_csv(sep="\t", index=False))
    logging.info("near-duplicate groups: %s", group_statistics(groups))
    logging.info(
        "strategy %s, images per split and class:\n%s", cfg["strategy"], split_summary(manifest)
    )


step.run(snakemake, main)  # noqa: F821
