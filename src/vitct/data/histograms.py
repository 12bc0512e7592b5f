"""Each slice's grey-level histogram: the share of its pixels in each of 32 equal grey bands.

Taken of the slice as decoded, at its own resolution (downscaling averages neighbouring pixels
and smooths away the fine spread of grey levels), it is what the grey-level baseline reads and
one of the two distances of the out-of-distribution score (vitct.model.ood).
"""

from __future__ import annotations

import numpy as np

HISTOGRAM_BINS = 32


def grey_histograms(images, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """uint8 images (an (N, H, W) array, or a list of (H, W) arrays of any sizes) -> float
    (N, bins): the share of each image's pixels in each of `bins` equal grey bands."""
    rows = []
    for image in images:
        bands = np.asarray(image, dtype=np.int64).ravel() * bins // 256
        rows.append(np.bincount(bands, minlength=bins) / bands.size)
    return np.stack(rows) if rows else np.zeros((0, bins))
