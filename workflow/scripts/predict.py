"""Classify the images of one configured folder with the final model (rule predict)."""

import logging

from vitct.pipeline import harness
from vitct.prediction.predictor import load_model, unfamiliar_warning, write_csv
from vitct.prediction.series_verdicts import HOW, series_verdicts, verdict_lines


def main(snakemake):
    table = load_model(snakemake.input.model).predict(snakemake.input.folder)
    write_csv(table, snakemake.output.predictions)
    ok = table.error == ""
    logging.info(
        "classified %d of %d images in %s: %s",
        ok.sum(),
        len(table),
        snakemake.input.folder,
        table.predicted[ok].value_counts().to_dict(),
    )
    verdicts = series_verdicts(table)
    if len(verdicts):
        logging.info("one verdict per DICOM series or NIfTI volume (%s):", HOW)
        for line in verdict_lines(verdicts, shown=len(verdicts)):
            logging.info("%s", line)
    unfamiliar = unfamiliar_warning(table)
    if unfamiliar:
        logging.warning("%s", unfamiliar)
    failed = table[~ok]
    for row in failed.itertuples():  # kept in the CSV too; a bad file must not fail the others
        logging.warning("could not classify %s: %s", row.path, row.error)


harness.run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
