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


def source_prefix(name: str, primary: bool) -> str:
    """What a training source's image paths start with in the tables: nothing for the primary
    source (its paths as its manifest has them), "NAME/" for each further one, so that the
    paths of several sources never collide."""
    return "" if primary else f"{name}/"


def load_training_cache(paths: list, prefixes: list[str]) -> dict:
    """The caches of every training source (one per source, in the same preprocessing) as one,
    each source's paths under its prefix (source_prefix)."""
    caches = [load_cache(path) for path in paths]
    if len(caches) == 1 and not prefixes[0]:
        return caches[0]
    combined = {}
    for key in caches[0]:
        parts = [cache[key] for cache in caches]
        if key == "paths":
            parts = [
                np.char.add(prefix, part) for prefix, part in zip(prefixes, parts, strict=True)
            ]
        combined[key] = np.concatenate(parts)
    return combined
