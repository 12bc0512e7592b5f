"""Stratified train/val/test split at the level of groups of images.

A group is a set of images that must stay on one side: exact copies (same sha256) under the
`random` strategy, chains of near-duplicate slices under `grouped`. Groups are dealt out in a
seeded order, each to the split that is furthest below its target share of its class, so the
fractions hold per class and no group straddles.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
STRATEGIES = ("random", "grouped")


def assign_splits(
    manifest: pd.DataFrame, fractions: dict, seed: int, group_column: str = "sha256"
) -> pd.Series:
    """Return a Series (aligned with manifest) of 'train' / 'val' / 'test'.

    Groups are stratified by their majority label (a group of near-duplicates may, rarely, hold
    both labels; it still stays whole).
    """
    target = np.array([fractions[s] for s in SPLITS], dtype=float)
    rng = np.random.default_rng(seed)
    groups = manifest.groupby(group_column, sort=True)["label"]
    sizes = groups.size()
    stratum = groups.agg(lambda labels: labels.mode().min())
    choice = {}
    for label in sorted(stratum.unique()):
        keys = stratum.index[stratum == label]
        filled = np.zeros(len(SPLITS))
        total = sizes[keys].sum()
        for key in keys[rng.permutation(len(keys))]:
            # The split that stays furthest below its target after taking this group.
            deficit = target * total - filled - sizes[key]
            deficit[target == 0] = -np.inf
            best = int(np.argmax(deficit))
            choice[key] = SPLITS[best]
            filled[best] += sizes[key]
    return manifest[group_column].map(choice).astype(object)


def split_summary(split_manifest: pd.DataFrame) -> pd.DataFrame:
    return pd.crosstab(split_manifest["split"], split_manifest["class_dir"], margins=True)
