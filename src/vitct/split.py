"""Stratified train/val/test split at the level of groups of images.

A group is a set of images that must stay on one side: exact copies (same sha256) under the
`random` strategy, chains of near-duplicate slices under `grouped`. Groups are dealt out in a
seeded order, each to the split that is furthest below its target share of its class, so the
fractions hold per class and no group straddles.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vitct.data import CLASS_DIRS
from vitct.step import UserError

SPLITS = ("train", "val", "test")
STRATEGIES = ("random", "grouped")
# Each split needs each class: without it validation cannot rank epochs (MCC is 0 whatever the
# model does) and the test split has no ROC curve, which evaluation would find only at the end.
MIN_PER_CLASS = 1


class SplitError(UserError):
    """A split (or a class in it) left too small by the fractions; the message says which to
    change, and to what."""


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


def check_split(
    manifest: pd.DataFrame, split: pd.Series, fractions: dict, seed: int, group_column: str
) -> None:
    """Raise SplitError when a split holds fewer than MIN_PER_CLASS images of a class, with the
    numbers and the least change of split.fractions that fills it (tried with assign_splits)."""
    counts = _counts(manifest, split)
    short = [(s, c) for s in SPLITS for c in CLASS_DIRS if counts.loc[s, c] < MIN_PER_CLASS]
    if not short:
        return
    name, class_dir = short[0]
    per_split = "; ".join(
        f"{s} " + ", ".join(f"{counts.loc[s, c]} {c}" for c in CLASS_DIRS) for s in SPLITS
    )
    found = f"{counts.loc[name, class_dir]} {class_dir} images in the {name} split ({per_split})"
    total = int(counts[class_dir].sum())
    if total < MIN_PER_CLASS * len(SPLITS):
        raise SplitError(
            f"{found}: the data hold only {total} usable {class_dir} images, and each of "
            f"{', '.join(SPLITS)} needs {MIN_PER_CLASS} at least; add images of that class."
        )
    change = _least_change(manifest, fractions, seed, group_column, name)
    advice = (
        "set " + " and ".join(f"split.fractions.{s}: {v:g}" for s, v in change.items())
        if change
        else "add images"
    )
    raise SplitError(
        f"{found}: split.fractions.{name} {fractions[name]:g} is too small for "
        f"{total} {class_dir} images; {advice} (each split needs {MIN_PER_CLASS} image of "
        "each class at least)."
    )


def _counts(manifest: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    table = pd.crosstab(split, manifest["class_dir"])
    return table.reindex(index=list(SPLITS), columns=list(CLASS_DIRS), fill_value=0)


def _least_change(manifest, fractions, seed, group_column, name) -> dict:
    """The smallest rise of fractions[name] (in steps of 0.01, taken from the largest other
    split) after which every split holds MIN_PER_CLASS of each class; {} when none does."""
    donor = max((s for s in SPLITS if s != name), key=lambda s: fractions[s])
    for step in range(1, 100):
        rise = step / 100
        trial = {**fractions, name: fractions[name] + rise, donor: fractions[donor] - rise}
        if trial[donor] <= 0:
            return {}
        counts = _counts(manifest, assign_splits(manifest, trial, seed, group_column))
        if (counts.to_numpy() >= MIN_PER_CLASS).all():
            return {s: round(trial[s], 4) for s in (name, donor)}
    return {}
