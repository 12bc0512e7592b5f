"""Near-duplicate slices and the 1-nearest-neighbour pixel baseline.

The public dataset has no patient ids, and one patient's neighbouring slices are almost the
same image. Both jobs here work on small thumbnails (32x32 grey, each standardised to zero mean
and unit norm), compared by cosine similarity.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from vitct.data import rows_of

THUMBNAIL_SIZE = 32


def embed(thumbnails: np.ndarray) -> np.ndarray:
    """uint8 (N, s, s) -> float32 (N, s*s) rows of unit norm after removing each mean."""
    x = thumbnails.reshape(len(thumbnails), -1).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def near_duplicate_groups(thumbnails: np.ndarray, threshold: float, block: int = 1024):
    """Group id per image: connected components of the 'cosine >= threshold' graph, so a chain
    of near-duplicates (slice 1 ~ slice 2 ~ slice 3) forms one group."""
    e = embed(thumbnails)
    rows, cols = [], []
    for start in range(0, len(e), block):  # blocks keep memory flat on big data sets
        sim = e[start : start + block] @ e.T
        r, c = np.nonzero(sim >= threshold)
        rows.append(r + start)
        cols.append(c)
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


class SeenNeighbours(NamedTuple):
    """The nearest seen (train or validation) image of every test image of one split."""

    seen: np.ndarray  # cache rows of the seen images
    test: np.ndarray  # cache rows of the test images, in split-table order
    nearest: np.ndarray  # for each test image, its nearest seen image (an index into `seen`)
    similarity: np.ndarray  # the cosine similarity of their thumbnails


def nearest_seen(cache: dict, table: pd.DataFrame, split_column: str) -> SeenNeighbours:
    """Nearest seen (train or validation) thumbnail of every test image, in split-table order."""
    is_test = table[split_column] == "test"
    seen = rows_of(cache["paths"], table.path[~is_test].tolist(), "the image cache")
    test = rows_of(cache["paths"], table.path[is_test].tolist(), "the image cache")
    nearest, similarity = nearest_train(cache["thumbnails"][seen], cache["thumbnails"][test])
    return SeenNeighbours(seen, test, nearest, similarity)


def score_test_subsets(truth, predicted, similarity: np.ndarray, threshold: float) -> dict:
    """Test metrics of a model or baseline, overall and on the test images whose most similar
    seen (train or validation) slice is below `threshold`: slices it has not, in effect, seen."""
    from vitct.metrics import binary_metrics

    unseen = similarity < threshold
    return {
        "all_test": binary_metrics(truth, predicted),
        "no_near_duplicate_in_train": (
            binary_metrics(truth[unseen], predicted[unseen]) if unseen.any() else {}
        ),
        "test_with_near_duplicate_in_train": float(1 - unseen.mean()),
        "threshold": threshold,
    }


def pixel_baseline(cache: dict, neighbours: SeenNeighbours, threshold: float) -> dict:
    """1-nearest-neighbour on thumbnails, fitted on train+val, scored on test; `neighbours` is
    what nearest_seen returned for the split.

    It can only memorise, so where it scores high the test set shares near-identical slices
    with the training set. Also reported: the share of test images that have such a slice, and
    the baseline's metrics on the test images that have none.
    """
    predicted = cache["y"][neighbours.seen][neighbours.nearest].astype(float)
    truth = cache["y"][neighbours.test]
    return score_test_subsets(truth, predicted, neighbours.similarity, threshold)
