"""Shared by the benchmark scripts: synthetic demo slices preprocessed in memory."""

from __future__ import annotations

import tempfile

import numpy as np

from vitct.data import load_grey
from vitct.manifest import build_manifest
from vitct.split import assign_splits
from vitct.synthetic import generate


def demo_cache(n_per_class: int, size: int) -> dict:
    """train/val/test arrays like vitct.data.load_splits returns, from generated slices."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, n_per_class, seed=7, progress=False)
        manifest, _ = build_manifest(tmp, progress=False)
        split = assign_splits(manifest, {"train": 0.7, "val": 0.15, "test": 0.15}, 42)
        cache = {}
        for name in ("train", "val", "test"):
            rows = manifest[split == name]
            cache[f"{name}_x"] = np.stack([load_grey(f"{tmp}/{p}", size) for p in rows.path])
            cache[f"{name}_y"] = rows.label.to_numpy()
    cache["mean"] = cache["train_x"].mean() / 255
    cache["std"] = cache["train_x"].std() / 255
    return cache
