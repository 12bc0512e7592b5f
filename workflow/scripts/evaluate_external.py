"""One external set: the final model's predictions (as `vitct predict` gives them), metrics
with intervals over the set's own near-duplicate groups, a reliability diagram, both baselines
and every ablation variant scored on it."""

import json
import logging

import numpy as np
import pandas as pd

from vitct import step
from vitct.artifact import load_with_familiarity
from vitct.data import load_cache
from vitct.external import baseline_probabilities, external_groups
from vitct.familiarity import flagged_share, score_and_flag
from vitct.figures import plot_reliability
from vitct.inference import predict_with_features
from vitct.intensity import load_histograms
from vitct.metrics import binary_metrics, prediction_table, score
from vitct.outputs import write_text


def model_probabilities(model_path, cache: dict):
    """COVID probability, ood score and unfamiliar flag per image (as `vitct predict`)."""
    model, meta, familiarity = load_with_familiarity(model_path)
    pre = meta["preprocessing"]
    prob, features = predict_with_features(model, cache["x"], pre["mean"], pre["std"])
    return (prob, *score_and_flag(familiarity, features, cache.get("histograms")))


def main(snakemake):
    name, params = snakemake.params.name, snakemake.params
    cache = load_cache(snakemake.input.cache)
    y = cache["y"]
    prob, ood_score, unfamiliar = model_probabilities(snakemake.input.model, cache)
    groups = external_groups(cache, params.threshold)
    source = load_cache(snakemake.input.source_cache)
    split = pd.read_csv(snakemake.input.split, sep="\t", keep_default_na=False)
    baselines = baseline_probabilities(
        source,
        load_histograms(snakemake.input.source_histograms, source["paths"]),
        split,
        cache,
        load_histograms(snakemake.input.histograms, cache["paths"]),
        params.seed,
    )
    rejects = pd.read_csv(snakemake.input.rejects, sep="\t", keep_default_na=False)
    metrics = {
        "name": name,
        "path": params.path,
        "positive_class": "COVID",
        **score(y, prob, groups, params.bootstrap),
        "rejected_files": len(rejects),
        "near_duplicate_groups": int(len(np.unique(groups))),
        "predicted_covid_share": float((prob >= 0.5).mean()),
        "flagged_share": flagged_share(unfamiliar),  # called unfamiliar by the final model
        "baselines": {b: score(y, p, groups, params.bootstrap) for b, p in baselines.items()},
    }
    write_text(snakemake.output.metrics, json.dumps(metrics, indent=2, sort_keys=True))
    predictions = prediction_table(
        cache["paths"],
        y,
        prob,
        near_duplicate_group=groups,
        ood_score=np.round(ood_score, 4),
        unfamiliar=unfamiliar,
    )
    write_text(snakemake.output.predictions, predictions.to_csv(index=False))
    plot_reliability(y, prob, f"external set {name} (n = {len(y)})", snakemake.output.reliability)
    # Every ablation variant on the same images, beside the final model.
    rows = [{"model": "final", **binary_metrics(y, prob)}]
    for variant, model_path, variant_cache in zip(
        params.variants,
        snakemake.input.variant_models,
        snakemake.input.variant_caches,
        strict=True,
    ):
        variant_prob = model_probabilities(model_path, load_cache(variant_cache))[0]
        rows.append({"model": variant, **binary_metrics(y, variant_prob)})
    columns = ["model", "n", "accuracy", "mcc", "roc_auc", "sensitivity", "specificity"]
    table = pd.DataFrame(rows)[columns]
    write_text(snakemake.output.variants, table.to_csv(sep="\t", index=False, float_format="%.4f"))
    logging.info(
        "external %s: accuracy %.4f, MCC %.4f, ROC-AUC %.4f on %d images (%d rejected)",
        name,
        metrics["accuracy"],
        metrics["mcc"],
        metrics["roc_auc"],
        len(y),
        len(rejects),
    )


step.run(snakemake, main)  # noqa: F821
