"""Metrics and their intervals: the cluster bootstrap counts near-duplicate groups, not slices."""

from __future__ import annotations

import numpy as np
import pytest

from vitct.evaluation.metrics import binary_metrics, bootstrap_intervals, paired_differences


def scored_images(n: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    right = rng.random(n) < 0.8
    prob = np.where(right == (y == 1), 0.9, 0.1)
    return y, prob


def width(interval) -> float:
    return interval[1] - interval[0]


def test_duplicated_test_slices_widen_the_cluster_interval_not_the_plain_one():
    y, prob = scored_images()
    copies = 6  # every test slice six times, as a patient's neighbouring slices
    y6, prob6, groups = np.repeat(y, copies), np.repeat(prob, copies), np.repeat(np.arange(80), 6)
    alone = bootstrap_intervals(y, prob, 400)["accuracy"]
    plain = bootstrap_intervals(y6, prob6, 400, groups=np.arange(len(y6)))["accuracy"]
    cluster = bootstrap_intervals(y6, prob6, 400, groups=groups)["accuracy"]
    assert binary_metrics(y6, prob6)["accuracy"] == pytest.approx(
        binary_metrics(y, prob)["accuracy"]
    )
    assert width(plain) < 0.6 * width(alone)  # six copies pass for six times the evidence
    assert width(cluster) == pytest.approx(width(alone), rel=0.35)
    assert width(cluster) > 1.6 * width(plain)


def test_paired_differences_resample_groups_too():
    y, prob_a = scored_images(seed=1)
    _, prob_b = scored_images(seed=2)
    y6, a6, b6 = (np.repeat(v, 6) for v in (y, prob_a, prob_b))
    groups = np.repeat(np.arange(len(y)), 6)
    plain = paired_differences(y6, a6, b6, 300, groups=np.arange(len(y6)))["accuracy"]
    cluster = paired_differences(y6, a6, b6, 300, groups=groups)["accuracy"]
    assert plain[0] == pytest.approx(cluster[0])
    assert width(cluster[1:]) > 1.6 * width(plain[1:])


def test_an_empty_test_set_gives_no_interval():
    assert bootstrap_intervals(np.array([], int), np.array([]), 10) == {}


def test_metrics_take_covid_as_positive():
    y = [1, 1, 1, 0, 0, 0]
    prob = [0.9, 0.8, 0.2, 0.1, 0.1, 0.7]  # COVID: 2 of 3 found; 1 false alarm
    m = binary_metrics(y, prob)
    assert m["recall"] == pytest.approx(2 / 3) and m["precision"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 2)


def test_paired_differences_score_both_models_on_the_same_resamples():
    from vitct.evaluation.metrics import paired_differences

    y = np.array([1, 0] * 50)
    right = y.astype(float)
    wrong_on_ten = right.copy()
    wrong_on_ten[:10] = 1 - wrong_on_ten[:10]
    same = paired_differences(y, right, right, n_resamples=50)
    assert same["accuracy"] == [0.0, 0.0, 0.0]
    diff, low, high = paired_differences(y, right, wrong_on_ten, n_resamples=200)["accuracy"]
    assert diff == pytest.approx(0.10)
    assert 0 < low <= diff <= high
