"""Write results/report.html: one self-contained page with every table and figure."""

from pathlib import Path

from vitct import step
from vitct.report import build_report


def main(snakemake):
    html = build_report(
        dict(snakemake.input.items()),
        snakemake.params.config,
        snakemake.params.benchmarks,
        snakemake.scriptdir,
    )
    Path(snakemake.output.html).write_text(html, encoding="utf-8")


step.run(snakemake, main)  # noqa: F821
