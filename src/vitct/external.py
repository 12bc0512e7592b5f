"""Scoring on an external set (evaluation.external): labelled scans from another source that
no model was trained on. The baselines are fitted on the in-source images the models saw
(train and validation), as in the baselines step, and scored on the external images.

Intervals resample the external set's own near-duplicate groups: several slices of one
patient or one published figure are not independent cases.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vitct.data import rows_of
from vitct.intensity import fit_histogram_model
from vitct.neighbours import near_duplicate_groups, nearest_train


def seen_rows(source_cache: dict, split: pd.DataFrame) -> np.ndarray:
    """Rows of the in-source cache that the models saw (train and validation, not test)."""
    seen = split.path[split.split != "test"].tolist()
    return rows_of(source_cache["paths"], seen, "the in-source image cache")


def baseline_probabilities(
    source_cache: dict,
    source_histograms: np.ndarray,
    split: pd.DataFrame,
    external_cache: dict,
    external_histograms: np.ndarray,
    seed: int,
) -> dict[str, np.ndarray]:
    """COVID probability of each external image under the 1-NN on thumbnails and the
    grey-level histogram baseline; `source_histograms` in source_cache's row order."""
    seen = seen_rows(source_cache, split)
    nearest, _ = nearest_train(source_cache["thumbnails"][seen], external_cache["thumbnails"])
    knn = source_cache["y"][seen][nearest].astype(float)
    grey = fit_histogram_model(source_histograms[seen], source_cache["y"][seen], seed)
    return {
        "nearest_neighbour": knn,
        "grey_histogram": grey.predict_proba(external_histograms)[:, 1],
    }


def external_groups(external_cache: dict, threshold: float) -> np.ndarray:
    return near_duplicate_groups(external_cache["thumbnails"], threshold)
