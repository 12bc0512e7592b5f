"""Stratified train/val/test split; exact copies stay on one side."""

import logging

import pandas as pd

from vitct import step
from vitct.split import assign_splits, split_summary


def main(snakemake):
    manifest = pd.read_csv(snakemake.input.manifest, sep="\t", keep_default_na=False)
    cfg = snakemake.params.split
    manifest["split"] = assign_splits(manifest, cfg["fractions"], cfg["seed"])
    manifest.to_csv(snakemake.output.split, sep="\t", index=False)
    logging.info("images per split and class:\n%s", split_summary(manifest))


step.run(snakemake, main)  # noqa: F821
