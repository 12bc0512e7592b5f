"""The grey-level baseline: gradient boosting on each scan's histogram of grey levels.

It sees no shape at all, only how much of a slice is how bright. The histograms are taken at
each scan's own resolution: downscaling averages neighbouring pixels and smooths away the fine
spread of grey levels (noise, reconstruction, small dense spots), little at 128 px (0.959 on the
real data's test split against 0.962) but much at 64 or 32 px (0.935). On the real data this
alone separates the classes well (whether from the scanners and their export or from denser
lungs), so the report shows it beside the ViT: a ViT that does not beat it may be reading grey
levels rather than lesions.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from vitct.data import load_cache, rows_of
from vitct.metrics import score
from vitct.neighbours import SeenNeighbours, score_test_subsets

HISTOGRAM_BINS = 32


def grey_histograms(images, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """uint8 images (an (N, H, W) array, or a list of (H, W) arrays of any sizes) -> float
    (N, bins): the share of each image's pixels in each of `bins` equal grey bands."""
    rows = []
    for image in images:
        bands = np.asarray(image, dtype=np.int64).ravel() * bins // 256
        rows.append(np.bincount(bands, minlength=bins) / bands.size)
    return np.stack(rows) if rows else np.zeros((0, bins))


def load_histograms(path, paths) -> np.ndarray:
    """The stored histograms (grey_histograms rule) of `paths`, in that order."""
    stored = load_cache(path)
    return stored["histograms"][rows_of(stored["paths"], list(paths), path)]


def fit_histogram_model(histograms: np.ndarray, labels: np.ndarray, seed: int):
    """The grey-level baseline's classifier, fitted on these histograms (one row per scan)."""
    return HistGradientBoostingClassifier(random_state=seed).fit(histograms, labels)


def histogram_baseline(
    histograms: np.ndarray,
    labels: np.ndarray,
    neighbours: SeenNeighbours,
    threshold: float,
    seed: int,
) -> dict:
    """Gradient boosting on grey-level histograms (one row per cached image), fitted on
    train+val, scored on test, overall and on the test images with no near-duplicate seen (as
    the 1-NN baseline); `neighbours` is what neighbours.nearest_seen returned for the split."""
    model = fit_histogram_model(histograms[neighbours.seen], labels[neighbours.seen], seed)
    prob = model.predict_proba(histograms[neighbours.test])[:, 1]
    return score_test_subsets(labels[neighbours.test], prob, neighbours.similarity, threshold)


def shortcut_meter(
    train_images, train_labels, scored: dict, seed: int, bootstrap: int
) -> dict[str, dict]:
    """How much of the label the global grey levels of the model's own input still carry: the
    grey-level classifier fitted on the histograms of `train_images` (uint8, as the model gets
    them, after all preprocessing), scored on each set of `scored` (name -> (images, labels,
    near-duplicate groups)) with cluster-bootstrap intervals. Near 0.5 accuracy: grey levels
    alone no longer tell the classes apart in what the model sees."""
    model = fit_histogram_model(grey_histograms(train_images), train_labels, seed)
    return {
        name: score(labels, model.predict_proba(grey_histograms(images))[:, 1], groups, bootstrap)
        for name, (images, labels, groups) in scored.items()
    }
