"""Classification metrics, COVID as the positive class, from scikit-learn; and how far the COVID
probability can be taken at its word (the expected calibration error and the Brier score), which
accuracy and ROC-AUC cannot say: both are blind to a monotone change of the probabilities."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from vitct.data.classes import POSITIVE_LABEL


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


CALIBRATION_BINS = 10


def calibration_bins(prob_covid, bins: int = CALIBRATION_BINS) -> np.ndarray:
    """Each probability's bin among `bins` equal-width bins of [0, 1]: bin k holds
    [k / bins, (k + 1) / bins), the last one also 1.0 (the reliability diagrams use them too)."""
    prob = np.asarray(prob_covid, dtype=float)
    return np.clip(np.floor(prob * bins).astype(int), 0, bins - 1)


def expected_calibration_error(y_true, prob_covid, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error of the COVID probability (label 1 COVID).

    The probabilities fall into `bins` equal-width bins of [0, 1] (`calibration_bins`); in
    each bin that holds any, the gap is |share of COVID slices - mean COVID probability|;
    the ECE is the mean of the gaps weighted by the bins' counts:
    sum over bins of (n_bin / n) * |mean(y in bin) - mean(p in bin)|. 0 is calibrated; it is
    the COVID probability that is binned (both classes), not the top-label confidence.
    NaN for no images.
    """
    y = np.asarray(y_true, dtype=float)
    prob = np.asarray(prob_covid, dtype=float)
    if not len(y):
        return float("nan")
    which = calibration_bins(prob, bins)
    counts = np.bincount(which, minlength=bins)
    gaps = np.abs(np.bincount(which, y, bins) - np.bincount(which, prob, bins))
    return float(gaps.sum() / counts.sum())  # sum_bins n_b/n * |sum_b(y - p)| / n_b


def brier_score(y_true, prob_covid) -> float:
    """Mean squared difference between the COVID probability and the label (0 or 1): 0 is
    perfect, 0.25 is a constant 0.5. NaN for no images."""
    y = np.asarray(y_true, dtype=float)
    prob = np.asarray(prob_covid, dtype=float)
    return float(np.mean((prob - y) ** 2)) if len(y) else float("nan")


def resampling_weights(groups, n_resamples: int, seed: int = 0) -> np.ndarray:
    """Weights for a cluster bootstrap, one row per resample: how many times each image is drawn
    when whole groups are drawn with replacement (as many draws as there are groups).

    Neighbouring slices of one patient are nearly the same image, so resampling them one by one
    would count one patient as many independent cases and give too narrow an interval. `groups`
    is one group id per image (near-duplicate groups); give each image its own id for the plain
    bootstrap. One matrix lets every resample be scored at once (`weighted_score_matrix`); the
    draws are the ones earlier versions made one resample at a time, so a seed gives the same
    intervals as before. No images: a (0, 0) matrix, no resamples.
    """
    codes = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    if not len(codes):
        return np.zeros((0, 0))
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    # One call per resample, in order, keeps the random stream of the per-resample version.
    draws = np.array([rng.integers(0, n_groups, n_groups) for _ in range(n_resamples)], dtype=int)
    rows = np.arange(n_resamples)[:, None] * n_groups
    counts = np.bincount((rows + draws).ravel(), minlength=n_resamples * n_groups)
    return counts.reshape(n_resamples, n_groups)[:, codes].astype(float)


# Rows of weights scored per pass: bounds the temporary arrays to a few tens of MB.
_CELLS_PER_CHUNK = 1 << 21


def _score_rows(y_true, y_pred, prob, weights) -> dict[str, np.ndarray]:
    """Weighted accuracy, MCC and ROC-AUC for every row of `weights`, predictions given."""
    pos = np.asarray(y_true).ravel() == POSITIVE_LABEL
    hit = np.asarray(y_pred).ravel() == POSITIVE_LABEL
    prob = np.asarray(prob, dtype=float).ravel()
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    n_rows, n = weights.shape
    if n == 0:
        nan = np.full(n_rows, np.nan)
        return {"accuracy": nan, "mcc": np.zeros(n_rows), "roc_auc": nan.copy()}
    # Weighted confusion counts by one matrix product: columns tp, fp, fn, tn.
    cells = np.stack([pos & hit, ~pos & hit, pos & ~hit, ~pos & ~hit], axis=1).astype(float)
    tp, fp, fn, tn = (weights @ cells).T
    total = tp + fp + fn + tn
    # sklearn's matthews_corrcoef: 0 when a true or a predicted class has no weight.
    denom = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = (tp + tn) / total
        mcc = np.where(denom > 0, (tp * tn - fp * fn) / np.sqrt(denom), 0.0)
    # ROC-AUC: sort once; a positive beats the negative weight below its tie block and half of
    # the one within it (sklearn's trapezoids over distinct thresholds give the same area).
    order = np.argsort(prob, kind="stable")
    sorted_prob, pos_sorted = prob[order], pos[order]
    starts = np.flatnonzero(np.r_[True, sorted_prob[1:] != sorted_prob[:-1]])
    roc_auc = np.empty(n_rows)
    step = max(1, _CELLS_PER_CHUNK // n)
    for lo in range(0, n_rows, step):
        w = weights[lo : lo + step, order]
        pos_w = np.add.reduceat(np.where(pos_sorted, w, 0.0), starts, axis=1)
        neg_w = np.add.reduceat(np.where(pos_sorted, 0.0, w), starts, axis=1)
        neg_below = np.zeros_like(neg_w)
        np.cumsum(neg_w[:, :-1], axis=1, out=neg_below[:, 1:])
        area = (pos_w * (neg_below + 0.5 * neg_w)).sum(axis=1)
        n_pos, n_neg = pos_w.sum(axis=1), neg_w.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            roc_auc[lo : lo + step] = np.where(
                (n_pos > 0) & (n_neg > 0), area / (n_pos * n_neg), np.nan
            )
    return {"accuracy": accuracy, "mcc": mcc, "roc_auc": roc_auc}


def weighted_score_matrix(
    y_true, prob, weights: np.ndarray, threshold: float = 0.5
) -> dict[str, np.ndarray]:
    """Accuracy, MCC and ROC-AUC for each row of a (resamples, images) weight matrix at once.

    Equal to scikit-learn's metrics with `sample_weight=row` (ties in `prob` count one half in
    the AUC), without one scikit-learn call per resample, which made a 1000-resample bootstrap
    take minutes. MCC is 0 where its denominator is 0, as in scikit-learn; ROC-AUC is NaN for a
    row in which one class has no weight. Labels are 0/1, COVID (1) positive.
    """
    prob = np.asarray(prob, dtype=float)
    y_pred = (prob >= threshold).astype(int)
    return _score_rows(y_true, y_pred, prob, weights)


def percentile_interval(samples, level: float = 0.95) -> list[float]:
    """[low, high] holding the central `level` share of bootstrap samples (NaN when none)."""
    if len(samples) == 0:
        return [float("nan"), float("nan")]
    alpha = (1 - level) / 2 * 100
    return [float(np.percentile(samples, alpha)), float(np.percentile(samples, 100 - alpha))]
