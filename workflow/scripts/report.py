"""Write results/report.html: one self-contained page with every table and figure."""

from vitct import step
from vitct.outputs import write_text
from vitct.report import build_report


def main(snakemake):
    html = build_report(
        dict(snakemake.input.items()),
        snakemake.params.config,
        snakemake.params.benchmarks,
        snakemake.scriptdir,
    )
    write_text(snakemake.output.html, html)


step.run(snakemake, main)  # noqa: F821
