"""The grey-level baseline: gradient boosting on each thumbnail's histogram of grey levels.

It sees no shape at all, only how much of a slice is how bright. On the real data that alone
separates the classes well (the two classes differ in brightness and contrast, whether from
the scanners and their export or from denser lungs), so the report shows it beside the ViT:
a ViT that barely beats it may be reading grey levels rather than lesions.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from vitct.neighbours import score_test_subsets

HISTOGRAM_BINS = 32


def grey_histograms(images: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """uint8 (N, H, W) -> float (N, bins): the share of each image's pixels in each grey band."""
    flat = images.reshape(len(images), -1).astype(np.int64) * bins // 256
    counts = np.stack([np.bincount(row, minlength=bins) for row in flat])
    return counts / flat.shape[1]


def histogram_baseline(cache: dict, neighbours: tuple, threshold: float, seed: int) -> dict:
    """Gradient boosting on grey-level histograms of thumbnails, fitted on train+val, scored on
    test, overall and on the test images with no near-duplicate seen (as the 1-NN baseline);
    `neighbours` is what neighbours.test_neighbours returned for the split."""
    seen, test, _, similarity = neighbours
    features = grey_histograms(cache["thumbnails"])
    model = HistGradientBoostingClassifier(random_state=seed)
    model.fit(features[seen], cache["y"][seen])
    prob = model.predict_proba(features[test])[:, 1]
    return score_test_subsets(cache["y"][test], prob, similarity, threshold)
