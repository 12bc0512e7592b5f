"""From a decoded grey slice to what the model sees: an optional body or lung mask (cropped to
it, the rest black), an optional per-image intensity standardisation within the mask, and the
resize to the model's square.

Why: the training source's two classes differ in their grey levels as a whole and in how the
slices are framed (scanner, window, export), so a model can score high in-source by reading
the source, and fails on slices from elsewhere. A mask removes what lies around the lungs
(table, background, framing); standardising within it removes each image's grey-level offset
and scale, so only the pattern inside the lungs is left to read.

Masks use classical image processing only (Otsu threshold, connected components, convex hull,
morphology; no outside weights), on a copy of the slice scaled to WORK_SIDE pixels on its
longer side, so the structuring elements mean the same on every source's resolution.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MASKS = ("none", "body", "lungs")
INTENSITIES = ("raw", "standardise", "equalise")
WORK_SIDE = 256
# A lung mask smaller than this share of the body is a failure (a slice above the lungs, or
# an image that is not a CT slice): the body mask is used instead.
MIN_LUNG_SHARE = 0.05
# Standardised grey levels: the mask's mean at STANDARD_MEAN, one SD STANDARD_SD grey levels
# away; 0 is kept for what lies outside the mask.
STANDARD_MEAN, STANDARD_SD = 128.0, 40.0


def body_mask(grey: np.ndarray) -> np.ndarray:
    """The body: the convex hull of the large bright components (tissue above Otsu's
    threshold; large: a tenth of the largest at least, so specks, text and arrows are left
    out). The hull keeps the lungs inside it even where the image is cropped so tightly that
    they touch its edge and cut the tissue into pieces, and leaves out the air and background
    around the body."""
    from scipy import ndimage  # here, as in lung_mask: the Snakefile imports this module's names
    from skimage.filters import threshold_otsu
    from skimage.morphology import convex_hull_image

    if grey.min() == grey.max():  # a blank image: nothing to tell the body from
        return np.ones(grey.shape, bool)
    bright = grey > threshold_otsu(grey)
    labels, n = ndimage.label(bright)
    if n == 0:
        return np.ones(grey.shape, bool)
    sizes = ndimage.sum(bright, labels, range(1, n + 1))
    return convex_hull_image(np.isin(labels, 1 + np.flatnonzero(sizes >= 0.1 * sizes.max())))


def lung_mask(grey: np.ndarray, body: np.ndarray) -> np.ndarray:
    """The lungs: dark components inside the body, closed and filled, so that vessels and
    lesions (brighter than aerated lung) inside them are kept; the body when none is found."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk

    inside = grey[body]
    if inside.size == 0 or inside.min() == inside.max():
        return body
    dark = ndimage.binary_opening(body & (grey < threshold_otsu(inside)), disk(2))
    labels, n = ndimage.label(dark)
    if n == 0:
        return body
    sizes = ndimage.sum(dark, labels, range(1, n + 1))
    keep = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.02 * body.sum()))
    lungs = ndimage.binary_fill_holes(ndimage.binary_closing(keep, disk(10)))
    return lungs & body if lungs.sum() >= MIN_LUNG_SHARE * body.sum() else body


def standardised(grey: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    """Grey levels inside `mask` re-expressed per image: "standardise" (mean and SD fixed),
    "equalise" (ranks: a flat histogram); "raw" leaves them. Outside the mask is 0."""
    out = np.zeros(grey.shape, np.float64)
    values = grey[mask].astype(np.float64)
    if how == "raw":
        out[mask] = values
    elif how == "standardise":
        sd = values.std() or 1.0
        out[mask] = np.clip(STANDARD_MEAN + STANDARD_SD * (values - values.mean()) / sd, 1, 255)
    else:  # equalise: each pixel's rank among the mask's, tied values sharing one
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        cumulative = np.cumsum(counts) - counts / 2
        out[mask] = 1 + 254 * cumulative[inverse] / values.size
    return np.rint(out).astype(np.uint8)


def model_input(
    grey: Image.Image, size: int, mask: str = "none", intensity: str = "raw"
) -> np.ndarray:
    """A grey PIL image -> the model's square uint8 (size, size) input."""
    if mask == "none" and intensity == "raw":  # the plain resize, as before these options
        resized = grey.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
        return np.asarray(resized, dtype=np.uint8)
    scale = WORK_SIDE / max(grey.size)
    work_size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    work = np.asarray(grey.resize(work_size, Image.Resampling.BILINEAR), dtype=np.uint8)
    region = np.ones(work.shape, bool)
    if mask != "none":
        region = body_mask(work)
        if mask == "lungs":
            region = lung_mask(work, region)
        rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
        crop = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        work, region = work[crop], region[crop]
    pixels = Image.fromarray(standardised(work, region, intensity))
    resized = pixels.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(resized, dtype=np.uint8)
