"""Deal the images outside the locked test split into grouped, stratified folds."""

import logging

import pandas as pd

from vitct import step
from vitct.folds import FoldError, assign_folds, fold_summary
from vitct.outputs import write_text


def main(snakemake):
    table = pd.read_csv(snakemake.input.split, sep="\t", keep_default_na=False)
    try:
        table["fold"] = assign_folds(table, snakemake.params.folds, snakemake.params.seed)
    except FoldError as e:
        raise step.UserError(str(e)) from None
    write_text(snakemake.output.folds, table.to_csv(sep="\t", index=False))
    logging.info("images and near-duplicate groups per fold (-1: test):\n%s", fold_summary(table))


step.run(snakemake, main)  # noqa: F821
