"""Grouped, stratified k-fold cross-validation over the images outside the locked test split.

Near-duplicate groups (chains of near-identical slices, the closest the data come to patients)
never straddle folds, so a held-out fold has no copy of a slice the model trained on. The test
split stays out of every fold: it is scored only by the models the protocol ships.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

TEST_FOLD = -1  # the fold column's value for the locked test split


class FoldError(ValueError):
    """The data cannot be dealt into the configured folds; the message says what to change."""


def assign_folds(
    table: pd.DataFrame, n_folds: int, seed: int, group_column: str = "near_duplicate_group"
) -> pd.Series:
    """Fold index (0..n_folds-1) of every non-test image, TEST_FOLD for the test split.

    scikit-learn's StratifiedGroupKFold keeps each group in one fold and each fold's share of
    COVID close to the whole's; the seed fixes the order groups are dealt in.
    """
    folds = pd.Series(TEST_FOLD, index=table.index, dtype=int)
    pool = table[table.split != "test"]
    for label, images in pool.groupby("label"):
        n_groups = images[group_column].nunique()
        if n_groups < n_folds:
            raise FoldError(
                f"evaluation.folds is {n_folds}, but the images outside the test split hold "
                f"only {n_groups} near-duplicate groups of class {label}: every fold needs one "
                f"of each class at least; lower evaluation.folds to {max(n_groups, 2)} or less"
            )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(
        splitter.split(pool, pool.label, groups=pool[group_column])
    ):
        folds[pool.index[held_out]] = fold
    return folds


def fold_splits(table: pd.DataFrame, fold: int) -> pd.Series:
    """The train / val / test assignment of the cross-validation run that holds out `fold`:
    that fold validates, the other folds train, and the locked test split stays test."""
    if fold not in set(table.fold):
        raise FoldError(
            f"fold {fold} is not in the fold table (folds {sorted(set(table.fold) - {-1})})"
        )
    split = np.where(table.fold == fold, "val", "train")
    return pd.Series(np.where(table.fold == TEST_FOLD, "test", split), index=table.index)


def fold_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Images and near-duplicate groups per fold and class (the test split as fold -1)."""
    return (
        table.groupby(["fold", "class_dir"])
        .agg(images=("path", "size"), groups=("near_duplicate_group", "nunique"))
        .unstack("class_dir", fill_value=0)
    )
