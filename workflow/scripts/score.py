"""Score one finished run: its held-out fold (a cross-validation run), the locked test split and
every external set, each a `part` of its predictions table, with every image's COVID
probability, out-of-distribution score and flag. The only step that reads those labels."""

import logging

import pandas as pd

from vitct.atomic_files import write_text
from vitct.data.cache import load_cache
from vitct.evaluation.metrics import binary_metrics
from vitct.evaluation.scoring import predictions, seen_and_scored
from vitct.model.artifact import load_with_familiarity
from vitct.model.inference import predict_with_features
from vitct.model.ood import score_and_flag
from vitct.pipeline import harness


def main(snakemake):
    model, meta, reference = load_with_familiarity(snakemake.input.model)
    table = pd.read_csv(snakemake.input.partition, sep="\t", keep_default_na=False)
    external = {
        name: load_cache(path)
        for name, path in zip(snakemake.params.external, snakemake.input.external, strict=True)
    }
    seen, scored = seen_and_scored(
        load_cache(snakemake.input.cache),
        table,
        snakemake.params.fold,
        snakemake.params.split,
        external,
    )
    pre, rows = meta["preprocessing"], []
    for part in scored:
        prob, features = predict_with_features(model, part.x, pre["mean"], pre["std"])
        ood_score, unfamiliar = score_and_flag(reference, features, part.grey)
        rows.append(predictions(part, prob, seen, ood_score, unfamiliar))
        scores = binary_metrics(part.y, prob)
        logging.info(
            "%s: accuracy %.4f, MCC %.4f, ROC-AUC %.4f on %d images, %.1f%% flagged",
            part.name,
            scores["accuracy"],
            scores["mcc"],
            scores["roc_auc"],
            len(part.y),
            100 * unfamiliar.mean() if unfamiliar.notna().any() else float("nan"),
        )
    table = pd.concat(rows, ignore_index=True)
    write_text(snakemake.output.predictions, table.to_csv(sep="\t", index=False))


harness.run(snakemake, main)  # noqa: F821
