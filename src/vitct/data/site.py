"""The adaptation site's labelled slices: an adaptation pool and an evaluation part, dealt by
near-duplicate group, and the draws of n slices from the pool that each point of the learning
curve adapts on. No draw ever reaches the evaluation part, which alone is scored."""

from __future__ import annotations

import numpy as np
import pandas as pd

from vitct.data.partition import deal_groups

POOL, EVAL = "pool", "eval"


def site_parts(site: pd.DataFrame, pool_share: float, seed: int) -> pd.Series:
    """Each site slice's part, POOL or EVAL, whole near-duplicate groups at a time, stratified
    by class."""
    return deal_groups(site, {POOL: pool_share, EVAL: 1 - pool_share}, seed, "near_duplicate_group")


def draw_by_group(table: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """Row positions of about `n` slices of `table` (columns label, near_duplicate_group),
    drawn whole groups at a time and stratified by class (half COVID, half not, as far as the
    table allows), seeded: the draw never splits a group of near-identical slices."""
    rng = np.random.default_rng(seed)
    picked = []
    for label, share in ((0, n - n // 2), (1, n // 2)):
        rows = table[table.label == label]
        groups = rows.near_duplicate_group.unique()
        taken = 0
        for group in groups[rng.permutation(len(groups))]:
            if taken >= share:
                break
            members = np.flatnonzero((table.label == label) & (table.near_duplicate_group == group))
            picked.extend(members.tolist())
            taken += len(members)
    return np.sort(np.array(picked, dtype=np.int64))


def adaptation_draw(site: pd.DataFrame, n: int | str, seed: int) -> pd.DataFrame:
    """The slices of the site's pool (rows whose `part` is POOL) that a point of the learning
    curve adapts on: n of them drawn by group, or the whole pool for n "all"."""
    pool = site[site.part == POOL].reset_index(drop=True)
    return pool if n == "all" else pool.iloc[draw_by_group(pool, n, seed)]
