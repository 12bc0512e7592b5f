"""The baselines on every fold a run trains on: fitted on the images the fold's runs see,
scored on the same parts as they are (vitct.evaluation.baselines), one predictions table per
fold with a `model` column."""

import logging

import pandas as pd

from vitct.atomic_files import write_text
from vitct.data.cache import load_cache, load_training_cache
from vitct.evaluation.baselines import fit_baselines
from vitct.evaluation.metrics import binary_metrics
from vitct.evaluation.scoring import predictions, seen_and_scored, site_evaluation_part
from vitct.pipeline import harness


def main(snakemake):
    params = snakemake.params
    cache = load_training_cache(snakemake.input.cache, params.prefixes)
    table = pd.read_csv(snakemake.input.partition, sep="\t", keep_default_na=False)
    external = {
        name: load_cache(path)
        for name, path in zip(params.external, snakemake.input.external, strict=True)
    }
    site_eval = site_evaluation_part(snakemake.input.site, params.site)
    for fold, output in zip(params.folds, snakemake.output.predictions, strict=True):
        seen, scored = seen_and_scored(cache, table, fold, params.split, external, site_eval)
        rows = []
        for name, predict in fit_baselines(seen, params.split["seed"]).items():
            for part in scored:
                prob = predict(part)
                rows.append(predictions(part, prob, seen).assign(model=name))
                logging.info(
                    "%s, %s, %s: accuracy %.4f",
                    fold,
                    name,
                    part.name,
                    binary_metrics(part.y, prob)["accuracy"],
                )
        write_text(output, pd.concat(rows, ignore_index=True).to_csv(sep="\t", index=False))


harness.run(snakemake, main)  # noqa: F821
