"""Write results/report.html, one self-contained page with every table and figure;
results/summary.md, its headline table, which data chose what, and the shortcut meter; and
results/model_card.md, the model card beside the model file (also a section of the report)."""

import json
from pathlib import Path

from vitct.atomic_files import write_text
from vitct.pipeline import harness
from vitct.pipeline.model_card import to_markdown
from vitct.pipeline.report import build_report, card_of, summary_markdown


def main(snakemake):
    inputs, config, params = (
        dict(snakemake.input.items()),
        snakemake.params.config,
        snakemake.params,
    )
    card = card_of(inputs, config, params.sources, snakemake.scriptdir)
    html = build_report(
        inputs, config, params.benchmarks, snakemake.scriptdir, params.shipped_model, card
    )
    write_text(snakemake.output.html, html)
    write_text(snakemake.output.card, to_markdown(card))
    headline = json.loads(Path(inputs["summary"]).read_text())
    receipt = json.loads(Path(inputs["receipt"]).read_text())
    summary = summary_markdown(headline, receipt, config["split"]["strategy"])
    write_text(snakemake.output.summary, summary)


harness.run(snakemake, main)  # noqa: F821
