"""Stratified train/val/test split at the level of groups of images.

A group is a set of images that must stay on one side: exact copies (same sha256) under the
`random` strategy. Groups are dealt out in a seeded order, each to the split that is furthest
below its target share of its class, so the fractions hold per class and no group straddles.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def assign_splits(
    manifest: pd.DataFrame, fractions: dict, seed: int, group_column: str = "sha256"
) -> pd.Series:
    """Return a Series (aligned with manifest) of 'train' / 'val' / 'test'."""
    target = np.array([fractions[s] for s in SPLITS], dtype=float)
    rng = np.random.default_rng(seed)
    split = pd.Series("", index=manifest.index, dtype=object)
    for _, frame in manifest.groupby("label", sort=True):
        groups = frame.groupby(group_column, sort=True).groups  # group id -> row index
        order = rng.permutation(len(groups))
        keys = list(groups)
        filled = np.zeros(len(SPLITS))
        total = len(frame)
        for i in order:
            rows = groups[keys[i]]
            # The split whose share after taking this group stays furthest below its target.
            deficit = target * total - filled - len(rows)
            deficit[target == 0] = -np.inf
            choice = int(np.argmax(deficit))
            split.loc[rows] = SPLITS[choice]
            filled[choice] += len(rows)
    return split


def split_summary(split_manifest: pd.DataFrame) -> pd.DataFrame:
    return pd.crosstab(split_manifest["split"], split_manifest["class_dir"], margins=True)
