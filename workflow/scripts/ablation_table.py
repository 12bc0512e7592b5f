"""Tabulate and draw what each ingredient of the final model buys on the test images."""

import logging
from pathlib import Path

from vitct import step
from vitct.ablation import ablation_table
from vitct.figures import plot_ablation
from vitct.outputs import write_text


def main(snakemake):
    final_dir = Path(snakemake.input.final_metrics).parent
    variant_dirs = {Path(p).parent.name: Path(p).parent for p in snakemake.input.metrics}
    table = ablation_table(
        final_dir, variant_dirs, snakemake.params.variants, snakemake.params.bootstrap
    )
    write_text(snakemake.output.table, table.to_csv(sep="\t", index=False, float_format="%.6g"))
    plot_ablation(table, snakemake.output.figure)
    for row in table.itertuples():
        logging.info(
            "%s: test accuracy %.4f, final minus this %+.1f points",
            row.variant,
            row.test_accuracy,
            row.accuracy_points,
        )


step.run(snakemake, main)  # noqa: F821
