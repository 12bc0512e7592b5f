"""Which images each run trains on, validates on and is scored on.

- The locked test split: a share of the images, dealt by group and stratified by class, scored
  only by finished models. `grouped` (the default) deals chains of near-duplicate slices, the
  closest the data come to patients; `random` deals exact copies only, as published figures on
  this dataset split, so one patient's near-identical slices fall on both sides.
- The folds: the other images (the pool) dealt into K grouped, stratified folds.
- A run trains on the pool outside its held-out fold (fold "all": the whole pool), minus its
  inner validation split, carved by near-duplicate group from those training images. The inner
  validation split alone picks the run's epoch, its out-of-distribution threshold and, for the
  sweep, its recipe; the held-out fold, the locked test and external sets are read only when the
  finished model is scored.

Groups are dealt in a seeded order, each to the part that is furthest below its target share
of its class, so the shares hold per class and no group straddles two parts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from vitct.data.cache import rows_of
from vitct.data.classes import CLASS_DIRS
from vitct.errors import UserError

STRATEGIES = ("random", "grouped")
GROUP_COLUMN = {"random": "sha256", "grouped": "near_duplicate_group"}
ALL = "all"  # the fold name of a run on the whole pool, scored on the locked test
LEAVE_OUT = "lo_"  # lo_NAME: a run on every source but NAME, scored on all of NAME's images
DRAW = "draw"  # drawD: an adaptation of the run on `all`, scored as it is
TEST_FOLD = -1  # the fold column's value for the locked test split
# Each part needs each class: without it validation cannot rank epochs (MCC is 0 whatever the
# model does) and the test split has no ROC curve, which scoring would find only at the end.
MIN_PER_CLASS = 1


class SplitError(UserError, ValueError):
    """A part (or a class in it) left too small by the shares; the message says which setting
    to change, and to what."""


def fold_names(n_folds: int) -> list[str]:
    return [f"fold{k}" for k in range(n_folds)]


def fold_index(fold: str) -> int | None:
    """0 for "fold0", None for "all", a left-out source's fold and an adaptation's draw."""
    if fold == ALL or fold.startswith(LEAVE_OUT) or (fold.startswith(DRAW) and fold[4:].isdigit()):
        return None
    if not fold.startswith("fold") or not fold[4:].isdigit():
        raise ValueError(
            f"a run's fold is '{ALL}', fold0, fold1, ..., {LEAVE_OUT}SOURCE or {DRAW}0, ..., "
            f"not {fold!r}"
        )
    return int(fold[4:])


def deal_groups(
    table: pd.DataFrame, shares: dict[str, float], seed: int, group_column: str
) -> pd.Series:
    """The part (a key of `shares`) of every row, whole groups at a time, stratified by the
    groups' majority label (a group of near-duplicates may, rarely, hold both labels; it still
    stays whole)."""
    names = list(shares)
    target = np.array([shares[n] for n in names], dtype=float)
    rng = np.random.default_rng(seed)
    groups = table.groupby(group_column, sort=True)["label"]
    sizes = groups.size()
    stratum = groups.agg(lambda labels: labels.mode().min())
    if "source" in table:  # every source dealt alike: its classes' shares hold per source
        sources = table.groupby(group_column, sort=True)["source"].agg(lambda s: s.mode().min())
        stratum = sources.astype(str) + "/" + stratum.astype(str)
    choice = {}
    for label in sorted(stratum.unique()):
        keys = stratum.index[stratum == label]
        filled = np.zeros(len(names))
        total = sizes[keys].sum()
        for key in keys[rng.permutation(len(keys))]:
            # The part that stays furthest below its target after taking this group.
            deficit = target * total - filled - sizes[key]
            deficit[target == 0] = -np.inf
            best = int(np.argmax(deficit))
            choice[key] = names[best]
            filled[best] += sizes[key]
    return table[group_column].map(choice).astype(object)


def locked_test(table: pd.DataFrame, share: float, seed: int, strategy: str) -> pd.Series:
    """True for the images of the locked test split under `strategy`; a SplitError when the
    test split or the pool lacks a class."""
    column = GROUP_COLUMN[strategy]
    shares = {"pool": 1 - share, "test": share}
    part = deal_groups(table, shares, seed, column)
    _check_parts(table, part, shares, seed, column, "split.test", "test")
    return part == "test"


def assign_folds(table: pd.DataFrame, n_folds: int, seed: int) -> pd.Series:
    """Fold index (0..n_folds-1) of every pool image, TEST_FOLD for the locked test (column
    `test`); with fewer than two folds, 0 for the whole pool.

    scikit-learn's StratifiedGroupKFold keeps each near-duplicate group in one fold and each
    fold's share of COVID close to the whole's; the seed fixes the order groups are dealt in.
    """
    folds = pd.Series(np.where(table.test, TEST_FOLD, 0), index=table.index, dtype=int)
    if n_folds < 2:
        return folds
    pool = table[~table.test]
    for label, images in pool.groupby("label"):
        n_groups = images.near_duplicate_group.nunique()
        if n_groups < n_folds:
            advice = (
                f"lower evaluation.folds to {n_groups} or less"
                if n_groups >= 2
                else "set evaluation.folds: 0 (no cross-validation) or add images of that class"
            )
            raise SplitError(
                f"evaluation.folds is {n_folds}, but the images outside the test split hold "
                f"only {n_groups} near-duplicate groups of class {CLASS_DIRS[1 - label]}: every "
                f"fold needs one of each class at least; {advice}"
            )
    # Stratified by source as well as class when there are several sources.
    strata = (
        pool.source.astype(str) + "/" + pool.label.astype(str) if "source" in pool else pool.label
    )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(
        splitter.split(pool, strata, groups=pool.near_duplicate_group)
    ):
        folds[pool.index[held_out]] = fold
    return folds


def run_parts(table: pd.DataFrame, fold: str, val_share: float, seed: int) -> pd.Series:
    """Every image's part in the run on `fold`: "train", "val" (its inner validation split),
    "held_out" (its fold, for a cross-validation run; every image of the source a lo_SOURCE run
    leaves out) or "test" (the locked test split).

    The inner validation split is dealt from the run's training images alone, by near-duplicate
    group and stratified by their labels, so no held-out or test label can change it."""
    k = fold_index(fold)
    part = pd.Series("train", index=table.index, dtype=object)
    part[table.test] = "test"
    if k is not None:
        part[(table.fold == k) & ~table.test] = "held_out"
    if fold.startswith(LEAVE_OUT):
        left_out = table.source == fold.removeprefix(LEAVE_OUT)
        if not left_out.any():
            raise SplitError(f"run on {fold}: no image of source '{fold[len(LEAVE_OUT) :]}'")
        part[left_out] = "held_out"
    training = table[part == "train"]
    shares = {"train": 1 - val_share, "val": val_share}
    inner = deal_groups(training, shares, seed + (k or 0), "near_duplicate_group")
    _check_parts(
        training, inner, shares, seed + (k or 0), "near_duplicate_group", "split.val", fold
    )
    part[training.index] = inner
    return part


def check_runs(table: pd.DataFrame, folds: list[str], val_share: float, seed: int) -> None:
    """Raise SplitError now, before any training, for a run whose training or inner validation
    images lack a class."""
    for fold in folds:
        run_parts(table, fold, val_share, seed)


def run_data(cache: dict, table: pd.DataFrame, parts: pd.Series, wanted: tuple[str, ...]) -> dict:
    """The cached images of the `wanted` parts of one run: `{part}_x`, `{part}_y`,
    `{part}_paths`, `{part}_grey` (the slices' grey-level histograms as decoded),
    `{part}_thumbnails` and `{part}_groups` (near-duplicate groups); with "train", also the
    training images' pixel mean and std, which standardise the model's input. Nothing of the
    other parts is read."""
    out = {}
    for name in wanted:
        selected = table[parts == name]
        rows = rows_of(cache["paths"], selected.path.tolist(), "the image cache")
        out[f"{name}_x"] = cache["x"][rows]
        out[f"{name}_y"] = cache["y"][rows]
        out[f"{name}_paths"] = cache["paths"][rows]
        out[f"{name}_grey"] = cache["histograms"][rows]
        out[f"{name}_thumbnails"] = cache["thumbnails"][rows]
        out[f"{name}_groups"] = selected.near_duplicate_group.to_numpy()
        out[f"{name}_sources"] = (
            selected.source.to_numpy(dtype=object)
            if "source" in selected
            else np.full(len(selected), "", dtype=object)
        )
    if "train" in wanted:
        train = out["train_x"].astype(np.float64) / 255.0
        out["mean"], out["std"] = float(train.mean()), float(train.std())
    return out


def part_summary(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Images per part (or fold) and class."""
    return pd.crosstab(table[column], table["class_dir"], margins=True)


def _check_parts(table, part, shares, seed, group_column, setting, run) -> None:
    """Raise SplitError when a part holds fewer than MIN_PER_CLASS images of a class, with the
    numbers and the least change of `setting` that fills it (tried with deal_groups)."""
    counts = _counts(table, part, list(shares))
    short = [(p, c) for p in shares for c in CLASS_DIRS if counts.loc[p, c] < MIN_PER_CLASS]
    if not short:
        return
    name, class_dir = short[0]
    per_part = "; ".join(
        f"{p} " + ", ".join(f"{counts.loc[p, c]} {c}" for c in CLASS_DIRS) for p in shares
    )
    found = f"{counts.loc[name, class_dir]} {class_dir} images in the {name} part ({per_part})"
    where = "" if run == "test" else f" of the run on {run}"
    total = int(counts[class_dir].sum())
    if total < MIN_PER_CLASS * len(shares):
        raise SplitError(
            f"{found}{where}: only {total} usable {class_dir} images are there to deal, and each "
            f"part needs {MIN_PER_CLASS} at least; add images of that class."
        )
    value = _least_change(table, shares, seed, group_column, name)
    advice = f"set {setting}: {value:g}" if value is not None else "add images"
    raise SplitError(
        f"{found}{where}: {setting} {shares[list(shares)[1]]:g} leaves too few for "
        f"{total} {class_dir} images; {advice} (each part needs {MIN_PER_CLASS} image of each "
        "class at least)."
    )


def _counts(table: pd.DataFrame, part: pd.Series, names: list[str]) -> pd.DataFrame:
    counts = pd.crosstab(part, table["class_dir"])
    return counts.reindex(index=names, columns=list(CLASS_DIRS), fill_value=0)


def _least_change(table, shares, seed, group_column, short: str) -> float | None:
    """The share of the second part (test or val) after the smallest move, in steps of 0.01,
    towards the part that is short, that fills every part; None when none does."""
    first, second = list(shares)
    direction = 1 if short == second else -1
    for step in range(1, 100):
        value = round(shares[second] + direction * step / 100, 4)
        if not 0 < value < 1:
            return None
        trial = {first: 1 - value, second: value}
        counts = _counts(table, deal_groups(table, trial, seed, group_column), [first, second])
        if (counts.to_numpy() >= MIN_PER_CLASS).all():
            return value
    return None
