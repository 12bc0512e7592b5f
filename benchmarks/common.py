"""Shared by the benchmark scripts: train/val/test arrays preprocessed in memory, from
generated demo slices or from a folder in the Kaggle layout (COVID/, non-COVID/)."""

from __future__ import annotations

import tempfile

import numpy as np

from vitct.data.images import load_grey
from vitct.data.manifest import build_manifest
from vitct.data.partition import deal_groups
from vitct.data.synthetic import generate


def folder_cache(root: str, size: int, seed: int = 42) -> dict:
    """train/val/test arrays as vitct.training.loop.train takes them (train_x, train_y, val_x,
    ...; mean and std of the training pixels): a 70/15/15 split stratified by class, exact
    copies (same sha256) on one side, dealt as the pipeline deals its parts."""
    manifest, _ = build_manifest(root, progress=False)
    shares = {"train": 0.7, "val": 0.15, "test": 0.15}
    split = deal_groups(manifest, shares, seed, "sha256")
    cache = {}
    for name in ("train", "val", "test"):
        rows = manifest[split == name]
        cache[f"{name}_x"] = np.stack([load_grey(f"{root}/{p}", size) for p in rows.path])
        cache[f"{name}_y"] = rows.label.to_numpy()
    cache["mean"] = cache["train_x"].mean() / 255
    cache["std"] = cache["train_x"].std() / 255
    return cache


def demo_cache(n_per_class: int, size: int) -> dict:
    """folder_cache of freshly generated synthetic slices."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, n_per_class, seed=7, progress=False)
        return folder_cache(tmp, size)
