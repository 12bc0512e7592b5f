"""Image decoding and the preprocessed array cache that every training job reads.

One function turns a file into model input (`load_grey`), used by preprocessing, evaluation and
prediction alike, so the model sees the same pixels everywhere. It decodes with PIL, not
torchvision.io: the model file records PIL's grey conversion as its preprocessing, and
torchvision's grey weights and rounding differ from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Kaggle layout: class folder name -> label index. COVID is the positive class (1).
CLASS_DIRS = ("COVID", "non-COVID")
CLASS_NAMES = ("non-COVID", "COVID")  # index = label
POSITIVE_LABEL = 1


def label_of(class_dir: str) -> int:
    return CLASS_NAMES.index(class_dir)


def to_grey(img: Image.Image) -> Image.Image:
    """Single-channel grey, whatever the file's mode.

    The real data's colour modes leak the label (COVID files are RGB or RGBA, non-COVID files are
    all RGBA), so every image is reduced to luminance; the (opaque) alpha channel is dropped.
    """
    if img.mode in ("I;16", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        span = a.max() - a.min()
        a = (a - a.min()) / span * 255 if span else np.zeros_like(a)
        return Image.fromarray(a.astype(np.uint8))
    return img.convert("L")  # ITU-R 601 luma; alpha is ignored


def open_grey(source) -> Image.Image:
    """Decode an image (path or file object) fully and grey it."""
    with Image.open(source) as img:
        img.load()
        return to_grey(img)


def square(grey: Image.Image, size: int) -> np.ndarray:
    """Resize a grey image to a square uint8 array."""
    resized = grey.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(resized, dtype=np.uint8)


def load_grey(source, image_size: int) -> np.ndarray:
    """The model input of one image file: decoded, grey, resized to a square uint8 array."""
    return square(open_grey(source), image_size)


def save_cache(path: str | Path, arrays: dict) -> None:
    """Arrays in one uncompressed .npz (fast to load)."""
    np.savez(path, **arrays)


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


def load_splits(cache: str | Path | dict, split_path: str | Path) -> dict:
    """The cached images (a cache file, or one already loaded) cut into train/val/test by the
    split table: `{split}_x`, `{split}_y`, `{split}_paths`, plus the training set's pixel mean
    and std for standardisation."""
    import pandas as pd

    source = "the image cache"
    if not isinstance(cache, dict):
        source, cache = cache, load_cache(cache)
    table = pd.read_csv(split_path, sep="\t", keep_default_na=False)
    out = {}
    for split in ("train", "val", "test"):
        rows = rows_of(cache["paths"], table.path[table.split == split].tolist(), source)
        out[f"{split}_x"] = cache["x"][rows]
        out[f"{split}_y"] = cache["y"][rows]
        out[f"{split}_paths"] = cache["paths"][rows]
    train = out["train_x"].astype(np.float64) / 255.0
    out["mean"], out["std"] = float(train.mean()), float(train.std())
    return out


def normalise(images, mean: float, std: float):
    """uint8 (N, H, W) -> float (N, 1, H, W) standardised with the training set's statistics."""
    import torch  # here, so that data handling without a model does not load torch

    x = torch.as_tensor(images).float().div_(255.0)
    return x.sub_(mean).div_(std).unsqueeze(1)
