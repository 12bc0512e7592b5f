"""What each ingredient buys over the cross-validation folds and seeds: every variant against
the final recipe, paired over the same runs, with which differences stand out of the noise."""

import logging
from pathlib import Path

import pandas as pd

from vitct import step
from vitct.crossval import EXTERNAL_PREFIX, HELD_OUT, paired_cv_differences
from vitct.outputs import write_text


def predictions(paths) -> pd.DataFrame:
    frames = [pd.read_csv(p, sep="\t", keep_default_na=False) for p in paths]
    return pd.concat(frames, ignore_index=True)


def main(snakemake):
    # results/ablation/{variant}/cv/fold{f}_seed{s}/predictions.tsv
    by_variant = {name: [] for name in snakemake.params.variants}
    for path in snakemake.input.variants:
        by_variant[Path(path).parents[2].name].append(path)
    final = predictions(snakemake.input.final)
    variants = {name: predictions(paths) for name, paths in by_variant.items()}
    # The held-out folds first (in-source), then every external set the runs were scored on.
    parts = [HELD_OUT, *sorted(p for p in final.part.unique() if p.startswith(EXTERNAL_PREFIX))]
    tables = []
    for part in parts:
        table = paired_cv_differences(
            final[final.part == part],
            {name: frame[frame.part == part] for name, frame in variants.items()},
            snakemake.params.bootstrap,
        )
        table.insert(0, "scored_on", "held-out folds" if part == HELD_OUT else part)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    write_text(snakemake.output.table, table.to_csv(sep="\t", index=False, float_format="%.6g"))
    for row in table[table.variant != "final model"].itertuples():
        logging.info(
            "%s on %s: final minus this %+.1f accuracy points [%.1f, %.1f]%s",
            row.variant,
            row.scored_on,
            row.accuracy_points,
            row.accuracy_points_low,
            row.accuracy_points_high,
            "" if row.distinguishable else " (within the noise)",
        )


step.run(snakemake, main)  # noqa: F821
