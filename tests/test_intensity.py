"""The grey-level histogram baseline: it must read brightness and be blind to shape."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vitct.intensity import (
    HISTOGRAM_BINS,
    grey_histograms,
    histogram_baseline,
    load_histograms,
    shortcut_meter,
)
from vitct.neighbours import nearest_seen

N_PER_CLASS = 150
THRESHOLD = 0.95


def test_grey_histograms_are_shares_of_pixels_per_band():
    images = np.zeros((2, 4, 4), dtype=np.uint8)
    images[1, :2] = 255  # half black, half white
    h = grey_histograms(images)
    assert h.shape == (2, HISTOGRAM_BINS)
    np.testing.assert_allclose(h.sum(axis=1), 1.0)
    assert h[0, 0] == 1.0
    assert h[1, 0] == h[1, -1] == 0.5


def test_grey_histograms_take_images_of_different_sizes():
    scans = [np.full((3, 5), 255, np.uint8), np.zeros((7, 2), np.uint8)]  # as scans come
    h = grey_histograms(scans)
    assert h.shape == (2, HISTOGRAM_BINS)
    assert h[0, -1] == 1.0 and h[1, 0] == 1.0


def test_stored_histograms_come_back_in_the_order_asked(tmp_path):
    path = tmp_path / "grey_histograms.npz"
    np.savez(path, paths=np.array(["a.png", "b.png"]), histograms=np.array([[1.0, 0], [0, 1]]))
    np.testing.assert_array_equal(load_histograms(path, ["b.png", "a.png"]), [[0, 1], [1, 0]])
    # An image the file does not know (a stale file from another manifest): say so, and how.
    with pytest.raises(ValueError, match=r"no row for 1 of the images \(e\.g\. c\.png\).*rerun"):
        load_histograms(path, ["a.png", "c.png"])


def two_class_data(kind: str, seed: int = 0):
    """Noise thumbnails with a bright square; classes differ in `kind`:
    'brightness' (class 1 is 40 grey levels brighter) or 'shape' (the square sits on the left
    or on the right: the same grey levels, so identical histogram statistics)."""
    rng = np.random.default_rng(seed)
    n = 2 * N_PER_CLASS
    y = np.repeat([0, 1], N_PER_CLASS)
    x = rng.integers(40, 120, size=(n, 32, 32))
    for i, label in enumerate(y):
        top = rng.integers(4, 20)
        left = 2 if kind == "brightness" or label == 0 else 18
        x[i, top : top + 10, left : left + 10] += 100
        if kind == "brightness" and label == 1:
            x[i] += 40
    paths = np.array([f"img{i}.png" for i in range(n)])
    split = np.where(rng.random(n) < 0.7, "train", "test")
    cache = {"thumbnails": x.clip(0, 255).astype(np.uint8), "y": y, "paths": paths}
    return cache, pd.DataFrame({"path": paths, "split": split})


@pytest.mark.parametrize(("kind", "low", "high"), [("brightness", 0.95, 1.0), ("shape", 0.3, 0.7)])
def test_histogram_baseline_reads_grey_levels_not_shape(kind, low, high):
    cache, table = two_class_data(kind)
    neighbours = nearest_seen(cache, table, "split")
    features = grey_histograms(cache["thumbnails"])
    result = histogram_baseline(features, cache["y"], neighbours, THRESHOLD, seed=0)
    accuracy = result["all_test"]["accuracy"]
    assert low <= accuracy <= high, (kind, accuracy)
    assert result["all_test"]["n"] == (table.split == "test").sum()
    assert 0.0 <= result["test_with_near_duplicate_in_train"] <= 1.0


def brighter_class(n: int, seed: int):
    """Noise slices with a bright square anywhere; class 1 is the same 40 grey levels brighter
    (never clipped): the classes differ in global brightness only."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    x = rng.integers(40, 120, size=(n, 32, 32))
    for i in range(n):
        top, left = rng.integers(2, 20, size=2)
        x[i, top : top + 10, left : left + 10] += 60
    return (x + 40 * y[:, None, None]).astype(np.uint8), y


def standardised(images: np.ndarray) -> np.ndarray:
    """Each image z-scored on its own, mapped back to uint8 (as a per-image standardisation of
    the model's input would): a global shift in brightness is gone."""
    x = images.astype(np.float64)
    mean, std = x.mean(axis=(1, 2), keepdims=True), x.std(axis=(1, 2), keepdims=True)
    return np.clip(np.round(128 + 40 * (x - mean) / std), 0, 255).astype(np.uint8)


def as_cached(images: np.ndarray) -> np.ndarray:
    return images


@pytest.mark.parametrize(
    ("prepare", "low", "high"), [(as_cached, 0.95, 1.0), (standardised, 0.3, 0.7)]
)
def test_shortcut_meter_reads_brightness_until_each_image_is_standardised(prepare, low, high):
    train_x, train_y = brighter_class(2 * N_PER_CLASS, seed=0)
    scored = {}
    for name, seed in (("test", 1), ("external/elsewhere", 2)):
        x, y = brighter_class(N_PER_CLASS, seed)
        scored[name] = (prepare(x), y, np.arange(len(y)) // 3)  # groups of three slices
    meter = shortcut_meter(prepare(train_x), train_y, scored, seed=0, bootstrap=50)
    assert list(meter) == ["test", "external/elsewhere"]
    for name, result in meter.items():
        assert result["n"] == N_PER_CLASS
        assert low <= result["accuracy"] <= high, (name, result["accuracy"])
        assert low <= result["roc_auc"] <= high, (name, result["roc_auc"])
        assert set(result["ci95"]) == {"accuracy", "mcc", "roc_auc"}
        interval = result["ci95"]["accuracy"]
        assert interval[0] <= result["accuracy"] <= interval[1]
