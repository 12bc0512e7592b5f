"""Metrics and their intervals: the cluster bootstrap counts near-duplicate groups, not slices;
the calibration error and the Brier score against values computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vitct.evaluation.metrics import (
    binary_metrics,
    brier_score,
    calibration_bins,
    expected_calibration_error,
)
from vitct.evaluation.summaries import ablation_table, scored


def scored_images(n: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    right = rng.random(n) < 0.8
    prob = np.where(right == (y == 1), 0.9, 0.1)
    return y, prob


def run(y, prob, groups, recipe: str = "final") -> pd.DataFrame:
    """One run's predictions on one part, as summaries read them."""
    n = len(y)
    return pd.DataFrame(
        {
            "recipe": recipe,
            "fold": "all",
            "seed": 0,
            "part": "test",
            "path": [f"{i}.png" for i in range(n)],
            "label": y,
            "prob_covid": prob,
            "group": groups,
            "unfamiliar": pd.Series(pd.NA, index=range(n), dtype="boolean"),
        }
    )


def width(interval) -> float:
    return interval[1] - interval[0]


def test_duplicated_test_slices_widen_the_cluster_interval_not_the_plain_one():
    y, prob = scored_images()
    copies = 6  # every test slice six times, as a patient's neighbouring slices
    y6, prob6 = np.repeat(y, copies), np.repeat(prob, copies)
    alone = scored(run(y, prob, np.arange(80)), 400)["ci95"]["accuracy"]
    plain = scored(run(y6, prob6, np.arange(len(y6))), 400)["ci95"]["accuracy"]
    cluster = scored(run(y6, prob6, np.repeat(np.arange(80), copies)), 400)["ci95"]["accuracy"]
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

    def points(groups) -> list[float]:
        frames = pd.concat([run(y6, a6, groups), run(y6, b6, groups, "worse")])
        row = ablation_table(frames, {"worse": {}}, 300, False).iloc[1]
        return [row.accuracy_points, row.accuracy_points_low, row.accuracy_points_high]

    plain = points(np.arange(len(y6)))
    cluster = points(np.repeat(np.arange(len(y)), 6))
    assert plain[0] == pytest.approx(cluster[0])
    assert width(cluster[1:]) > 1.6 * width(plain[1:])


def test_metrics_take_covid_as_positive():
    y = [1, 1, 1, 0, 0, 0]
    prob = [0.9, 0.8, 0.2, 0.1, 0.1, 0.7]  # COVID: 2 of 3 found; 1 false alarm
    m = binary_metrics(y, prob)
    assert m["recall"] == pytest.approx(2 / 3) and m["precision"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 2)


def test_ece_and_brier_against_hand_computed_values():
    y = [1, 1, 0, 0, 1, 0]
    prob = [0.91, 0.97, 0.93, 0.12, 0.18, 0.55]
    # bins of width 0.1: [0.9, 1.0] holds 3 (mean 0.93667, 2 of 3 COVID: gap 0.27), [0.1, 0.2)
    # holds 2 (mean 0.15, half COVID: gap 0.35), [0.5, 0.6) holds 1 (gap 0.55)
    assert expected_calibration_error(y, prob) == pytest.approx((3 * 0.27 + 2 * 0.35 + 0.55) / 6)
    squared = [0.09**2, 0.03**2, 0.93**2, 0.12**2, 0.82**2, 0.55**2]
    assert brier_score(y, prob) == pytest.approx(sum(squared) / 6)
    # calibrated within each bin: a quarter COVID at 0.25, three quarters at 0.75
    assert expected_calibration_error([1, 0, 0, 0, 1, 1, 1, 0], [0.25] * 4 + [0.75] * 4) == 0
    assert brier_score([1, 0], [0.5, 0.5]) == 0.25
    # the ends: 1.0 is in the last bin, 0.3 in [0.3, 0.4), 0.0 in the first
    np.testing.assert_array_equal(calibration_bins([0.0, 0.3, 0.7, 0.999, 1.0]), [0, 3, 7, 9, 9])
    assert np.isnan(expected_calibration_error([], [])) and np.isnan(brier_score([], []))
