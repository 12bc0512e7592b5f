"""Write results/report.html, one self-contained page with every table and figure, and
results/summary.md, its headline table and the shortcut meter in markdown."""

from vitct import step
from vitct.outputs import write_text
from vitct.report import build_report, headline, shortcut_meter
from vitct.summary import summary_markdown


def main(snakemake):
    inputs, config = dict(snakemake.input.items()), snakemake.params.config
    html = build_report(inputs, config, snakemake.params.benchmarks, snakemake.scriptdir)
    write_text(snakemake.output.html, html)
    summary = summary_markdown(*headline(inputs, config), shortcut_meter(inputs))
    write_text(snakemake.output.summary, summary)


step.run(snakemake, main)  # noqa: F821
