"""Near-duplicate slices: which slices are, in effect, the same image.

The public dataset has no patient ids, and one patient's neighbouring slices are almost the
same image. Slices are compared on small thumbnails (32x32 grey, each standardised to zero mean
and unit norm) by cosine similarity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

THUMBNAIL_SIZE = 32


def embed(thumbnails: np.ndarray) -> np.ndarray:
    """uint8 (N, s, s) -> float32 (N, s*s) rows of unit norm after removing each mean."""
    x = thumbnails.reshape(len(thumbnails), -1).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def near_duplicate_groups(
    thumbnails: np.ndarray, threshold: float, patients=None, block: int = 1024
) -> np.ndarray:
    """Group id per image: connected components of the 'cosine >= threshold' graph, so a chain
    of near-duplicates (slice 1 ~ slice 2 ~ slice 3) forms one group; where a patient is known
    (`patients`, "" where not: a DICOM header's), all of a patient's slices join one group, so
    that splits and folds keep patients whole, and the patients decide: two slices of different
    known patients are never joined by their likeness (whole-body DICOM slices of different
    people are as alike at 32x32 as one patient's neighbours, and would chain into one group)."""
    e = embed(thumbnails)
    patients = None if patients is None else np.asarray(patients, dtype=str)
    rows, cols = [], []
    for start in range(0, len(e), block):  # blocks keep memory flat on big data sets
        sim = e[start : start + block] @ e.T
        r, c = np.nonzero(sim >= threshold)
        r += start
        if patients is not None:
            other = (patients[r] != "") & (patients[c] != "") & (patients[r] != patients[c])
            r, c = r[~other], c[~other]
        rows.append(r)
        cols.append(c)
    if patients is not None:  # a chain through each patient's slices joins them
        known = np.flatnonzero(patients != "")
        order = known[np.argsort(patients[known], kind="stable")]
        same = patients[order][1:] == patients[order][:-1]
        rows.append(order[:-1][same])
        cols.append(order[1:][same])
    n = len(e)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def group_statistics(groups: np.ndarray) -> dict:
    sizes = pd.Series(groups).value_counts()
    return {
        "images": int(len(groups)),
        "groups": int(len(sizes)),
        "singletons": int((sizes == 1).sum()),
        "images_in_groups_of_2_or_more": int(sizes[sizes > 1].sum()),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
    }


def nearest_train(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each test thumbnail: index of its most similar training thumbnail, and the cosine."""
    sim = embed(test) @ embed(train).T
    idx = sim.argmax(axis=1)
    return idx, sim[np.arange(len(test)), idx]
