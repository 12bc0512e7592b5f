"""Image decoding and the preprocessed array cache that every training job reads.

One function turns a file into model input (`load_grey`), used by preprocessing, evaluation and
prediction alike, so the model sees the same pixels everywhere. It decodes with PIL, not
torchvision.io: the model file records PIL's grey conversion as its preprocessing, and
torchvision's grey weights and rounding differ from it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from vitct.model_input import model_input

# Kaggle layout: class folder name -> label index. COVID is the positive class (1).
CLASS_DIRS = ("COVID", "non-COVID")
CLASS_NAMES = ("non-COVID", "COVID")  # index = label
POSITIVE_LABEL = 1

# One size policy for every image, in training data and in `vitct predict` alike. A CT slice is
# about 512x512 pixels (the real data's: 119 to 534 on a side). A header claiming more than 50
# megapixels (7000x7000) is a decompression bomb (a small file that expands to gigabytes in
# memory), not a slice; one under 16 pixels on a side is an icon or a placeholder.
MAX_IMAGE_PIXELS = 50_000_000
MIN_IMAGE_SIDE = 16
# PIL only warns up to twice its limit; decode() turns that warning into an error too.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class ImagePolicyError(ValueError):
    """An image that decodes but is no usable CT slice (its size or kind); the message says
    why."""


def label_of(class_dir: str) -> int:
    return CLASS_NAMES.index(class_dir)


def to_grey(img: Image.Image) -> Image.Image:
    """Single-channel grey, whatever the file's mode.

    The real data's colour modes leak the label (COVID files are RGB or RGBA, non-COVID files are
    all RGBA), so every image is reduced to luminance; the (opaque) alpha channel is dropped.
    """
    if img.mode.startswith("I"):
        # 16-bit images keep a fixed window, their top 8 bits: the same slice exported at 16 bits
        # (8-bit values times 257, or times 256) gives the very input of its 8-bit copy. A
        # stretch to each image's own darkest and brightest pixel would not, and would make the
        # input depend on a stray bright pixel. A 12-bit export (values up to 4095) comes out
        # dark: export such slices at 8 bits, or scaled to the whole 16-bit range.
        a = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(a.astype(np.uint8))
    if img.mode == "F":
        raise ImagePolicyError(
            "floating-point image (mode F): it has no fixed grey scale to read; export the "
            "slice as an 8- or 16-bit image"
        )
    return img.convert("L")  # ITU-R 601 luma; alpha is ignored


def check_image_size(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImagePolicyError(
            f"image too large: {width}x{height} pixels is over the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels (a CT slice is about 512x512)"
        )
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImagePolicyError(
            f"image too small: {width}x{height} pixels, under {MIN_IMAGE_SIDE} on a side "
            "(no CT slice)"
        )


def decode(source) -> Image.Image:
    """Open and decode an image (path or file object) fully, within the size policy; raises
    ImagePolicyError for one outside it (before decoding a bomb's pixels)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                check_image_size(*img.size)
                img.load()
                return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImagePolicyError(f"image too large (decompression bomb?): {e}") from None


def open_grey(source) -> Image.Image:
    """Decode an image (path or file object) fully and grey it."""
    return to_grey(decode(source))


def square(grey: Image.Image, size: int) -> np.ndarray:
    """Resize a grey image to a square uint8 array."""
    return model_input(grey, size)


def load_grey(source, image_size: int, mask: str = "none", intensity: str = "raw") -> np.ndarray:
    """The model input of one image file: decoded, grey, masked and standardised as the
    preprocessing says (vitct.model_input), resized to a square uint8 array."""
    return model_input(open_grey(source), image_size, mask, intensity)


def load_input(source, image_size: int, mask: str = "none", intensity: str = "raw"):
    """As load_grey, plus the histogram of the slice's grey levels as decoded (what the
    familiarity reference compares, vitct.familiarity): (input, histogram)."""
    from vitct.intensity import grey_histograms  # here: intensity imports this module

    grey = open_grey(source)
    histogram = grey_histograms([np.asarray(grey)])[0]
    return model_input(grey, image_size, mask, intensity), histogram


def save_cache(path: str | Path, arrays: dict) -> None:
    """Arrays in one uncompressed .npz (fast to load)."""
    from vitct.outputs import write_output

    write_output(path, lambda f: np.savez(f, **arrays))


def load_cache(path: str | Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def rows_of(stored_paths, wanted_paths, source: str | Path) -> np.ndarray:
    """Row index in an array file (`source`, holding `stored_paths`) of each of `wanted_paths`.

    Both come from the same manifest; a path that is missing means a stale or foreign file."""
    row_of = {p: i for i, p in enumerate(stored_paths)}
    missing = [p for p in wanted_paths if p not in row_of]
    if missing:
        raise ValueError(
            f"{source} has no row for {len(missing)} of the images (e.g. {missing[0]}); "
            "delete it and rerun the workflow to rebuild it"
        )
    return np.array([row_of[p] for p in wanted_paths], dtype=np.int64)


def load_splits(cache: str | Path | dict, split_path: str | Path, fold: int | None = None) -> dict:
    """The cached images (a cache file, or one already loaded) cut into train/val/test by the
    split table: `{split}_x`, `{split}_y`, `{split}_paths`, plus the training set's pixel mean
    and std for standardisation. With `fold`, the table is the fold table (folds.tsv) and the
    cut is that cross-validation run's: the fold validates, the other folds train."""
    import pandas as pd

    from vitct.folds import fold_splits

    source = "the image cache"
    if not isinstance(cache, dict):
        source, cache = cache, load_cache(cache)
    table = pd.read_csv(split_path, sep="\t", keep_default_na=False)
    assignment = table.split if fold is None else fold_splits(table, fold)
    out = {}
    for split in ("train", "val", "test"):
        rows = rows_of(cache["paths"], table.path[assignment == split].tolist(), source)
        out[f"{split}_x"] = cache["x"][rows]
        out[f"{split}_y"] = cache["y"][rows]
        out[f"{split}_paths"] = cache["paths"][rows]
        if "histograms" in cache:  # the grey levels as decoded (preprocess)
            out[f"{split}_grey"] = cache["histograms"][rows]
    train = out["train_x"].astype(np.float64) / 255.0
    out["mean"], out["std"] = float(train.mean()), float(train.std())
    return out


def unit_range(images):
    """uint8 (N, H, W) -> float (N, 1, H, W) in [0, 1]."""
    import torch  # here, so that data handling without a model does not load torch

    return torch.as_tensor(images).float().div_(255.0).unsqueeze(1)


def standardise(x01, mean: float, std: float):
    """Images in [0, 1] -> standardised with the training set's statistics (in place)."""
    return x01.sub_(mean).div_(std)


def normalise(images, mean: float, std: float):
    """uint8 (N, H, W) -> float (N, 1, H, W) standardised with the training set's statistics."""
    return standardise(unit_range(images), mean, std)
