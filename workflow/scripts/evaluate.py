"""Test-set metrics (COVID positive) with bootstrap intervals, predictions and figures."""

import json
import logging

import numpy as np
import pandas as pd

from vitct import step
from vitct.artifact import load_with_familiarity
from vitct.data import load_cache, load_splits
from vitct.familiarity import flagged_share, score_and_flag
from vitct.figures import plot_confusion, plot_roc
from vitct.inference import predict_with_features
from vitct.metrics import interval_fields, prediction_table
from vitct.neighbours import nearest_seen, score_test_subsets
from vitct.outputs import write_text


def main(snakemake):
    model, meta, familiarity = load_with_familiarity(snakemake.input.model)
    images = load_cache(snakemake.input.cache)  # read once: for the splits and the neighbours
    cache = load_splits(images, snakemake.input.split)
    pre = meta["preprocessing"]
    prob, features = predict_with_features(model, cache["test_x"], pre["mean"], pre["std"])
    ood_score, unfamiliar = score_and_flag(familiarity, features, cache.get("test_grey"))
    y = cache["test_y"]
    # Besides all test images, the test images with no near-identical seen slice: what the
    # model does with a slice it has not, in effect, seen before.
    table = pd.read_csv(snakemake.input.split, sep="\t", keep_default_na=False)
    similarity = nearest_seen(images, table, "split").similarity
    scored = score_test_subsets(y, prob, similarity, snakemake.params.threshold)
    metrics = {"positive_class": "COVID", **scored.pop("all_test"), **scored}
    # Intervals resample whole near-duplicate groups: one patient's slices are not independent.
    group_of = dict(zip(table.path, table.near_duplicate_group, strict=True))
    groups = np.array([group_of[p] for p in cache["test_paths"]])
    metrics.update(interval_fields(y, prob, groups, snakemake.params.bootstrap))
    # Share of in-source test images called unfamiliar: about 5% by the reference's design.
    metrics["flagged_share"] = flagged_share(unfamiliar)
    metrics["data"] = meta["data"]
    write_text(snakemake.output.metrics, json.dumps(metrics, indent=2, sort_keys=True))
    pred = (prob >= 0.5).astype(int)
    predictions = prediction_table(
        cache["test_paths"],
        y,
        prob,
        nearest_train_similarity=np.round(similarity, 4),
        near_duplicate_group=groups,
        ood_score=np.round(ood_score, 4),
        unfamiliar=unfamiliar,
    )
    write_text(snakemake.output.predictions, predictions.to_csv(index=False))
    plot_confusion(y, pred, snakemake.output.confusion)
    plot_roc(y, prob, snakemake.output.roc)
    logging.info("test: %s", {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})


step.run(snakemake, main)  # noqa: F821
