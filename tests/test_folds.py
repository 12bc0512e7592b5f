"""Grouped, stratified folds: near-duplicates stay together and the test split stays out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SPLIT_FRACTIONS, table_of_groups

from vitct.data import load_grey
from vitct.folds import TEST_FOLD, FoldError, assign_folds, fold_splits
from vitct.manifest import build_manifest
from vitct.neighbours import THUMBNAIL_SIZE, near_duplicate_groups
from vitct.split import assign_splits


def test_folds_keep_groups_whole_balance_classes_and_leave_the_test_split_out():
    table = table_of_groups()
    table["fold"] = assign_folds(table, 4, seed=0)
    assert (table.fold[table.split == "test"] == TEST_FOLD).all()
    pool = table[table.split != "test"]
    assert set(pool.fold) == {0, 1, 2, 3}
    assert (pool.groupby("near_duplicate_group").fold.nunique() == 1).all()
    share = pool.groupby("fold").label.mean()
    assert share.between(0.3, 0.7).all(), share
    sizes = pool.groupby("fold").size()
    assert sizes.max() <= 1.5 * sizes.min(), sizes


def test_folds_depend_on_the_seed_and_nothing_else():
    table = table_of_groups()
    again = table.sample(frac=1.0, random_state=1).sort_index()
    assert assign_folds(table, 3, 5).equals(assign_folds(again, 3, 5))
    assert not assign_folds(table, 3, 5).equals(assign_folds(table, 3, 6))


def test_a_fold_validates_and_the_other_folds_train():
    table = table_of_groups()
    table["fold"] = assign_folds(table, 3, seed=0)
    split = fold_splits(table, 1)
    assert (split[table.fold == 1] == "val").all()
    assert (split[table.fold.isin([0, 2])] == "train").all()
    assert (split[table.fold == TEST_FOLD] == "test").all()
    with pytest.raises(FoldError, match="fold 3"):
        fold_splits(table, 3)


def test_too_few_groups_for_the_folds_says_how_many_there_are():
    table = table_of_groups(n_groups=12)
    with pytest.raises(FoldError, match="lower evaluation.folds"):
        assign_folds(table, 6, seed=0)


@pytest.mark.real_data
def test_folds_keep_copies_together_and_never_touch_the_test_split(data_with_copies: Path):
    root = data_with_copies
    manifest, _ = build_manifest(root, progress=False)
    thumbs = np.stack([load_grey(root / p, THUMBNAIL_SIZE) for p in manifest.path])
    manifest["near_duplicate_group"] = near_duplicate_groups(thumbs, threshold=0.95)
    manifest["split"] = assign_splits(manifest, SPLIT_FRACTIONS, 0, "near_duplicate_group")
    fold = dict(zip(manifest.path, assign_folds(manifest, 3, seed=0), strict=True))
    copies = [("COVID/Covid (128).png", "COVID/Covid (129).png")]
    original = f"non-COVID/{sorted((root / 'non-COVID').glob('Non-Covid*.png'))[0].name}"
    copies += [(original, "non-COVID/shifted 0.png"), (original, "non-COVID/reencoded 0.png")]
    for a, b in copies:
        assert fold[a] == fold[b], (a, b)
    for path, split in zip(manifest.path, manifest.split, strict=True):
        assert (fold[path] == TEST_FOLD) == (split == "test"), path
