"""What each ingredient buys over the cross-validation folds and seeds: every variant against
the final recipe, paired over the same runs, with which differences stand out of the noise."""

import logging
from pathlib import Path

import pandas as pd

from vitct import step
from vitct.crossval import HELD_OUT, paired_cv_differences
from vitct.outputs import write_text


def held_out(paths) -> pd.DataFrame:
    frames = [pd.read_csv(p, sep="\t", keep_default_na=False) for p in paths]
    table = pd.concat(frames, ignore_index=True)
    return table[table.part == HELD_OUT]


def main(snakemake):
    # results/ablation/{variant}/cv/fold{f}_seed{s}/predictions.tsv
    by_variant = {name: [] for name in snakemake.params.variants}
    for path in snakemake.input.variants:
        by_variant[Path(path).parents[2].name].append(path)
    table = paired_cv_differences(
        held_out(snakemake.input.final),
        {name: held_out(paths) for name, paths in by_variant.items()},
        snakemake.params.bootstrap,
    )
    write_text(snakemake.output.table, table.to_csv(sep="\t", index=False, float_format="%.6g"))
    for row in table.iloc[1:].itertuples():
        logging.info(
            "%s: final minus this %+.1f accuracy points [%.1f, %.1f]%s",
            row.variant,
            row.accuracy_points,
            row.accuracy_points_low,
            row.accuracy_points_high,
            "" if row.distinguishable else " (within the noise)",
        )


step.run(snakemake, main)  # noqa: F821
