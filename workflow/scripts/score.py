"""Score one finished run: its held-out fold (a cross-validation run), the locked test split and
every external set, each a `part` of its predictions table, with every image's COVID
probability (calibrated by the model file's temperature, as `vitct predict` gives it, and before
it), out-of-distribution score and flag. The only step that reads those labels."""

import logging

import pandas as pd

from vitct.atomic_files import write_text
from vitct.data.cache import load_cache, load_training_cache
from vitct.evaluation.metrics import binary_metrics, expected_calibration_error
from vitct.evaluation.scoring import predictions, seen_and_scored, site_evaluation_part
from vitct.model.artifact import calibration_of, load_with_familiarity
from vitct.model.inference import covid_probability, logits_and_features
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
        load_training_cache(snakemake.input.cache, snakemake.params.prefixes),
        table,
        snakemake.params.fold,
        snakemake.params.split,
        external,
        site_evaluation_part(snakemake.input.site, snakemake.params.site),
    )
    pre, rows = meta["preprocessing"], []
    calibration = calibration_of(meta)
    temperature = calibration["temperature"]
    logging.info("temperature %.4g (%s)", temperature, calibration.get("note", "from the file"))
    for part in scored:
        logits, features = logits_and_features(model, part.x, pre["mean"], pre["std"])
        prob_raw, prob = covid_probability(logits), covid_probability(logits, temperature)
        ood_score, unfamiliar, set_unfamiliar = score_and_flag(reference, features, part.grey)
        if set_unfamiliar:
            logging.info("%s: unlike the training data as a whole: every image flagged", part.name)
        # predictions() refuses a temperature that changed a predicted class
        rows.append(predictions(part, prob, seen, ood_score, unfamiliar, prob_raw=prob_raw))
        scores = binary_metrics(part.y, prob)
        logging.info(
            "%s: accuracy %.4f, MCC %.4f, ROC-AUC %.4f, ECE %.4f -> %.4f on %d images, "
            "%.1f%% flagged",
            part.name,
            scores["accuracy"],
            scores["mcc"],
            scores["roc_auc"],
            expected_calibration_error(part.y, prob_raw),
            expected_calibration_error(part.y, prob),
            len(part.y),
            100 * unfamiliar.mean() if unfamiliar.notna().any() else float("nan"),
        )
    table = pd.concat(rows, ignore_index=True)
    write_text(snakemake.output.predictions, table.to_csv(sep="\t", index=False))


harness.run(snakemake, main)  # noqa: F821
