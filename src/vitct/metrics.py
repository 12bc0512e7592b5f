"""Classification metrics, COVID as the positive class, from scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from vitct.data import CLASS_NAMES, POSITIVE_LABEL

BOOTSTRAP_METRICS = ("accuracy", "mcc", "roc_auc")


def binary_metrics(y_true, prob_covid, threshold: float = 0.5) -> dict:
    """Binary metrics with COVID (label 1) positive, plus macro averages over both classes.

    Weighted averages (the original notebook's choice) make recall equal accuracy on a balanced
    set; the binary figures are the ones a reader of a diagnostic test expects.
    """
    y_true = np.asarray(y_true)
    prob = np.asarray(prob_covid, dtype=float)
    y_pred = (prob >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    both_classes = len(np.unique(y_true)) == 2
    kw = {"pos_label": POSITIVE_LABEL, "zero_division": 0}
    return {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, **kw)),
        "recall": float(skm.recall_score(y_true, y_pred, **kw)),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else 0.0,
        "specificity": float(tn / (tn + fp)) if tn + fp else 0.0,
        "f1": float(skm.f1_score(y_true, y_pred, **kw)),
        "mcc": float(skm.matthews_corrcoef(y_true, y_pred)),
        "roc_auc": float(skm.roc_auc_score(y_true, prob)) if both_classes else float("nan"),
        "precision_macro": float(
            skm.precision_score(y_true, y_pred, average="macro", zero_division=0)
        ),
        "recall_macro": float(skm.recall_score(y_true, y_pred, average="macro", zero_division=0)),
        "f1_macro": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
    }


def group_resampling_weights(groups, n_resamples: int, seed: int = 0):
    """Weights for a cluster bootstrap: per resample, how many times each image is drawn when
    whole groups are drawn with replacement (as many draws as there are groups).

    Neighbouring slices of one patient are nearly the same image, so resampling them one by one
    would count one patient as many independent cases and give too narrow an interval. `groups`
    is one group id per image (near-duplicate groups); give each image its own id for the plain
    bootstrap.
    """
    codes = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    if not len(codes):
        return
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        draws = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        yield draws[codes].astype(float)


def weighted_scores(y_true, y_pred, prob, weight) -> dict:
    """Accuracy, MCC and ROC-AUC (NaN with one class only) with images counted `weight` times."""
    keep = weight > 0
    t, p, s, w = y_true[keep], y_pred[keep], prob[keep], weight[keep]
    scores = {
        "accuracy": float(np.average(t == p, weights=w)),
        "mcc": float(skm.matthews_corrcoef(t, p, sample_weight=w)),
        "roc_auc": float("nan"),
    }
    if len(np.unique(t)) == 2:
        scores["roc_auc"] = float(skm.roc_auc_score(t, s, sample_weight=w))
    return scores


def bootstrap_intervals(
    y_true,
    prob_covid,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups=None,
) -> dict:
    """Percentile cluster-bootstrap intervals for accuracy, MCC and ROC-AUC: test images are
    resampled by near-duplicate group (`groups`, one id per image; None: image by image)."""
    y_true = np.asarray(y_true)
    prob = np.asarray(prob_covid, dtype=float)
    y_pred = (prob >= 0.5).astype(int)
    groups = np.arange(len(y_true)) if groups is None else np.asarray(groups)
    samples = {m: [] for m in BOOTSTRAP_METRICS}
    for weight in group_resampling_weights(groups, n_resamples, seed):
        for m, value in weighted_scores(y_true, y_pred, prob, weight).items():
            if not np.isnan(value):
                samples[m].append(value)
    return {m: percentile_interval(v, level) for m, v in samples.items() if v}


def interval_fields(y, prob, groups, bootstrap: int) -> dict:
    """The ci95 fields of a metrics file: cluster-bootstrap intervals over `groups` (one
    patient's neighbouring slices are not independent), none when bootstrap is 0."""
    if not bootstrap:
        return {}
    return {
        "ci95": bootstrap_intervals(y, prob, bootstrap, groups=groups),
        "ci95_resamples": "near-duplicate groups (cluster bootstrap)",
    }


def score(y, prob, groups, bootstrap: int) -> dict:
    """Metrics with cluster-bootstrap intervals over `groups` (none when bootstrap is 0)."""
    return {**binary_metrics(y, prob), **interval_fields(y, prob, groups, bootstrap)}


def percentile_interval(samples, level: float = 0.95) -> list[float]:
    """[low, high] holding the central `level` share of bootstrap samples (NaN when none)."""
    if len(samples) == 0:
        return [float("nan"), float("nan")]
    alpha = (1 - level) / 2 * 100
    return [float(np.percentile(samples, alpha)), float(np.percentile(samples, 100 - alpha))]


def paired_differences(
    y_true,
    prob_a,
    prob_b,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups=None,
) -> dict:
    """Metric of model a minus metric of model b on the same test images, with a paired
    percentile cluster-bootstrap interval (both models are scored on each resample of the
    near-duplicate groups, `groups`; None resamples image by image).

    Returns {metric: [difference, low, high]} for accuracy and MCC.
    """
    y_true = np.asarray(y_true)
    prob_a, prob_b = np.asarray(prob_a, dtype=float), np.asarray(prob_b, dtype=float)
    pred_a, pred_b = (prob_a >= 0.5).astype(int), (prob_b >= 0.5).astype(int)
    groups = np.arange(len(y_true)) if groups is None else np.asarray(groups)
    metrics = ("accuracy", "mcc")
    samples = {m: [] for m in metrics}
    for weight in group_resampling_weights(groups, n_resamples, seed):
        a = weighted_scores(y_true, pred_a, prob_a, weight)
        b = weighted_scores(y_true, pred_b, prob_b, weight)
        for m in metrics:
            samples[m].append(a[m] - b[m])
    whole = np.ones(len(y_true))
    a = weighted_scores(y_true, pred_a, prob_a, whole)
    b = weighted_scores(y_true, pred_b, prob_b, whole)
    return {m: [a[m] - b[m]] + percentile_interval(samples[m], level) for m in metrics}


def prediction_table(paths, y_true, prob_covid, **columns) -> pd.DataFrame:
    """One row per scored image: path, label, predicted class, COVID probability, whether it
    was right, then any further `columns` in the order given."""
    y_true, prob = np.asarray(y_true), np.asarray(prob_covid, dtype=float)
    pred = (prob >= 0.5).astype(int)
    return pd.DataFrame(
        {
            "path": paths,
            "label": [CLASS_NAMES[i] for i in y_true],
            "predicted": [CLASS_NAMES[i] for i in pred],
            "prob_covid": np.round(prob, 6),
            "correct": pred == y_true,
            **columns,
        }
    )
