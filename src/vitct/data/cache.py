"""The preprocessed array caches that every training and scoring job reads: one uncompressed
.npz per data set and preprocessing, rows in manifest order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitct.atomic_files import write_output


def save_cache(path: str | Path, arrays: dict) -> None:
    """Arrays in one uncompressed .npz (fast to load)."""
    write_output(path, lambda f: np.savez(f, **arrays))


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
