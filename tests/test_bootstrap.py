"""The vectorised cluster bootstrap gives what one scikit-learn call per resample gave."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from vitct.evaluation import metrics
from vitct.evaluation.metrics import resampling_weights, weighted_score_matrix

TOL = 1e-9


def _data(n=240, n_groups=60, seed=1):
    """Labels, groups of neighbouring slices and probabilities rounded to tenths (many ties)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    prob = np.round(0.3 * y + 0.7 * rng.random(n), 1)
    groups = rng.integers(0, n_groups, n)
    return y, prob, groups


def _old_weights(groups, n_resamples, seed=0):
    """The per-resample draws as the module made them before it was vectorised."""
    codes = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    if not len(codes):
        return
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        draws = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        yield draws[codes].astype(float)


def _sk_scores(y, prob, w, threshold=0.5):
    """scikit-learn's weighted metrics for one resample, images of weight 0 left out."""
    keep = w > 0
    t, s, w = y[keep], prob[keep], w[keep]
    p = (s >= threshold).astype(int)
    with warnings.catch_warnings():  # one label only: sklearn warns, and MCC is 0
        warnings.simplefilter("ignore", UserWarning)
        mcc = skm.matthews_corrcoef(t, p, sample_weight=w)
    auc = skm.roc_auc_score(t, s, sample_weight=w) if len(np.unique(t)) == 2 else np.nan
    return {
        "accuracy": skm.accuracy_score(t, p, sample_weight=w),
        "mcc": mcc,
        "roc_auc": auc,
    }


def test_resampling_weights_are_the_old_draws():
    _, _, groups = _data()
    for seed in (0, 7):
        old = np.stack(list(_old_weights(groups, 50, seed)))
        new = resampling_weights(groups, 50, seed)
        assert new.shape == (50, len(groups))
        np.testing.assert_array_equal(new, old)
    # Odd group counts too (the generator's 32-bit draws come in pairs).
    odd = np.arange(7).repeat(3)
    np.testing.assert_array_equal(
        resampling_weights(odd, 20, 3), np.stack(list(_old_weights(odd, 20, 3)))
    )
    assert resampling_weights([], 10).shape == (0, 0)


def test_score_matrix_matches_sklearn_row_by_row():
    y, prob, groups = _data()
    weights = resampling_weights(groups, 60, seed=2)
    # Degenerate rows: only negatives drawn (one class: AUC NaN, MCC 0), only negative
    # predictions (MCC 0), only two images, a single tie block holding both classes, and
    # fractional weights.
    only_neg = np.where(y == 0, 1.0, 0.0)
    two = np.zeros(len(y))
    two[[np.flatnonzero(y == 0)[0], np.flatnonzero(y == 1)[0]]] = [2.0, 3.0]
    tied = np.where(prob == np.intersect1d(prob[y == 0], prob[y == 1])[0], 1.0, 0.0)
    fractional = np.random.default_rng(0).random(len(y)) * (np.arange(len(y)) % 3 > 0)
    below = np.where(prob < 0.5, 1.0, 0.0)
    weights = np.vstack([weights, only_neg, below, two, tied, fractional])
    assert len(np.unique(y[tied > 0])) == 2
    scores = weighted_score_matrix(y, prob, weights)
    for m in ("accuracy", "mcc", "roc_auc"):
        assert scores[m].shape == (len(weights),)
    for i, w in enumerate(weights):
        expected = _sk_scores(y, prob, w)
        for m, value in expected.items():
            if np.isnan(value):
                assert np.isnan(scores[m][i]), (i, m)
            else:
                assert abs(scores[m][i] - value) < TOL, (i, m, scores[m][i], value)
    assert np.isnan(scores["roc_auc"][-5]) and scores["mcc"][-5] == 0.0
    assert len(np.unique(y[below > 0])) == 2 and scores["mcc"][-4] == 0.0
    assert scores["roc_auc"][-2] == pytest.approx(skm.roc_auc_score(y[tied > 0], prob[tied > 0]))


def test_score_matrix_in_chunks_equals_one_pass(monkeypatch):
    y, prob, groups = _data()
    weights = resampling_weights(groups, 37, seed=4)
    whole = weighted_score_matrix(y, prob, weights)
    monkeypatch.setattr(metrics, "_CELLS_PER_CHUNK", 5 * len(y))
    chunked = weighted_score_matrix(y, prob, weights)
    for m in whole:
        np.testing.assert_array_equal(chunked[m], whole[m])


def test_score_matrix_threshold():
    y, prob, _ = _data(n=80, seed=3)
    w = np.random.default_rng(4).integers(0, 3, len(y)).astype(float)
    at_07 = weighted_score_matrix(y, prob, w[None, :], threshold=0.7)
    expected = _sk_scores(y, prob, w, threshold=0.7)
    for m in expected:
        assert abs(at_07[m][0] - expected[m]) < TOL


def test_speed_against_the_per_resample_loop_is_printed(capsys):
    """Printed, not asserted: timings depend on the machine."""
    rng = np.random.default_rng(0)
    n, n_resamples = 600, 100
    y = rng.integers(0, 2, n)
    prob = np.round(np.clip(0.4 * y + 0.6 * rng.random(n), 0, 1), 2)
    groups = np.arange(n) // 4
    start = time.perf_counter()
    for w in _old_weights(groups, n_resamples):
        _sk_scores(y, prob, w)
    loop = time.perf_counter() - start
    start = time.perf_counter()
    weighted_score_matrix(y, prob, resampling_weights(groups, n_resamples))
    vectorised = time.perf_counter() - start
    with capsys.disabled():
        print(
            f"\nbootstrap, {n_resamples} resamples of {n} images: sklearn loop {loop:.3f} s, "
            f"vectorised {vectorised:.4f} s ({loop / max(vectorised, 1e-9):.0f}x)"
        )
