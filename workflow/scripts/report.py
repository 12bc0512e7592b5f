"""Write results/report.html, one self-contained page with every table and figure, and
results/summary.md, its headline table, which data chose what, and the shortcut meter."""

import json
from pathlib import Path

from vitct.atomic_files import write_text
from vitct.pipeline import harness
from vitct.pipeline.report import build_report, summary_markdown


def main(snakemake):
    inputs, config, params = (
        dict(snakemake.input.items()),
        snakemake.params.config,
        snakemake.params,
    )
    html = build_report(
        inputs, config, params.benchmarks, snakemake.scriptdir, params.shipped_model
    )
    write_text(snakemake.output.html, html)
    headline = json.loads(Path(inputs["summary"]).read_text())
    receipt = json.loads(Path(inputs["receipt"]).read_text())
    summary = summary_markdown(headline, receipt, config["split"]["strategy"])
    write_text(snakemake.output.summary, summary)


harness.run(snakemake, main)  # noqa: F821
