"""Classification metrics, COVID as the positive class, from scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from vitct.data import POSITIVE_LABEL

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


def bootstrap_intervals(
    y_true, prob_covid, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """Percentile bootstrap intervals over test images for accuracy, MCC and ROC-AUC."""
    y_true = np.asarray(y_true)
    prob = np.asarray(prob_covid, dtype=float)
    y_pred = (prob >= 0.5).astype(int)
    rng = np.random.default_rng(seed)
    samples = {m: [] for m in BOOTSTRAP_METRICS}
    for _ in range(n_resamples):
        idx = rng.integers(0, len(y_true), len(y_true))
        t, p, s = y_true[idx], y_pred[idx], prob[idx]
        samples["accuracy"].append(skm.accuracy_score(t, p))
        samples["mcc"].append(skm.matthews_corrcoef(t, p))
        if len(np.unique(t)) == 2:
            samples["roc_auc"].append(skm.roc_auc_score(t, s))
    return {m: percentile_interval(v, level) for m, v in samples.items() if v}


def percentile_interval(samples, level: float = 0.95) -> list[float]:
    """[low, high] holding the central `level` share of bootstrap samples (NaN when none)."""
    if len(samples) == 0:
        return [float("nan"), float("nan")]
    alpha = (1 - level) / 2 * 100
    return [float(np.percentile(samples, alpha)), float(np.percentile(samples, 100 - alpha))]


def paired_differences(
    y_true, prob_a, prob_b, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """Metric of model a minus metric of model b on the same test images, with a paired
    percentile bootstrap interval (both models are scored on each resample of the images).

    Returns {metric: [difference, low, high]} for accuracy and MCC.
    """
    y_true = np.asarray(y_true)
    pred_a = (np.asarray(prob_a, dtype=float) >= 0.5).astype(int)
    pred_b = (np.asarray(prob_b, dtype=float) >= 0.5).astype(int)
    scores = {"accuracy": skm.accuracy_score, "mcc": skm.matthews_corrcoef}
    rng = np.random.default_rng(seed)
    samples = {m: [] for m in scores}
    for _ in range(n_resamples):
        idx = rng.integers(0, len(y_true), len(y_true))
        for m, score in scores.items():
            samples[m].append(score(y_true[idx], pred_a[idx]) - score(y_true[idx], pred_b[idx]))
    return {
        m: [float(score(y_true, pred_a) - score(y_true, pred_b))]
        + percentile_interval(samples[m], level)
        for m, score in scores.items()
    }
