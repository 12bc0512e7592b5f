"""Write results/report.html, one self-contained page with every table and figure, and
results/summary.md, its headline table in markdown."""

from pathlib import Path

from vitct import step
from vitct.report import build_report, headline
from vitct.summary import summary_markdown


def main(snakemake):
    inputs, config = dict(snakemake.input.items()), snakemake.params.config
    html = build_report(inputs, config, snakemake.params.benchmarks, snakemake.scriptdir)
    Path(snakemake.output.html).write_text(html, encoding="utf-8")
    markdown = summary_markdown(*headline(inputs, config))
    Path(snakemake.output.summary).write_text(markdown, encoding="utf-8")


step.run(snakemake, main)  # noqa: F821
