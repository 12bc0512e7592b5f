"""What a finished run is scored on, and the one table every scoring writes.

A run on a cross-validation fold is scored on its held-out fold; every run on the locked test
split and on each external set. One predictions table per run (and per baseline and fold) holds
them all, one row per image and part: every summary (the cross-validation headline, the locked
test, the external sets, the ablation) is computed from these tables (vitct.evaluation.summaries).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vitct.data.duplicates import near_duplicate_groups, nearest_train
from vitct.data.partition import run_data, run_parts

HELD_OUT, TEST = "held_out", "test"
EXTERNAL_PREFIX = "external:"
COLUMNS = [
    "part",
    "path",
    "label",
    "prob_covid",
    "group",
    "nearest_seen",
    "ood_score",
    "unfamiliar",
]


def external_part(name: str) -> str:
    """The `part` of a run's predictions on the external set `name`."""
    return EXTERNAL_PREFIX + name


@dataclass
class Part:
    """Images of one part: model input, labels, paths, grey-level histograms as decoded,
    thumbnails and near-duplicate groups."""

    name: str
    x: np.ndarray
    y: np.ndarray
    paths: np.ndarray
    grey: np.ndarray
    thumbnails: np.ndarray
    groups: np.ndarray

    @classmethod
    def of(cls, name: str, data: dict, key: str | None = None) -> Part:
        key = key or name
        return cls(
            name,
            *(data[f"{key}_{k}"] for k in ("x", "y", "paths", "grey", "thumbnails", "groups")),
        )


def seen_and_scored(
    cache: dict,
    table: pd.DataFrame,
    fold: str,
    split: dict,
    external: dict[str, dict],
) -> tuple[Part, list[Part]]:
    """The images a run on `fold` saw (its training and inner validation images, as one part:
    what the baselines fit and nearest_seen compares with), and the parts it is scored on: its
    held-out fold (a cross-validation run), the locked test and each external set (name ->
    its cache), whose near-duplicate groups are found here with the same threshold."""
    parts = run_parts(table, fold, split["val"], split["seed"])
    wanted = ("train", "val", *(p for p in (HELD_OUT, TEST) if (parts == p).any()))
    data = run_data(cache, table, parts, wanted)
    seen = Part(
        "seen",
        *(
            np.concatenate([data[f"train_{k}"], data[f"val_{k}"]])
            for k in ("x", "y", "paths", "grey", "thumbnails", "groups")
        ),
    )
    scored = [Part.of(p, data) for p in (HELD_OUT, TEST) if f"{p}_x" in data]
    for name, images in external.items():
        groups = near_duplicate_groups(images["thumbnails"], split["near_duplicate_threshold"])
        scored.append(
            Part(
                external_part(name),
                images["x"],
                images["y"],
                images["paths"],
                images["histograms"],
                images["thumbnails"],
                groups,
            )
        )
    return seen, scored


def predictions(
    part: Part, prob: np.ndarray, seen: Part, ood_score=None, unfamiliar=None
) -> pd.DataFrame:
    """One part's rows of a predictions table. nearest_seen: the cosine similarity of each
    image's thumbnail to the most similar one the model saw (near 1: a near-copy of a training
    slice); ood_score and unfamiliar: the model's out-of-distribution score and flag (empty for
    a baseline, or a model file without a reference)."""
    n = len(part.y)
    _, similarity = nearest_train(seen.thumbnails, part.thumbnails)
    return pd.DataFrame(
        {
            "part": part.name,
            "path": part.paths,
            "label": part.y.astype(int),
            "prob_covid": np.round(np.asarray(prob, dtype=float), 6),
            "group": part.groups,
            "nearest_seen": np.round(similarity, 4),
            "ood_score": np.round(ood_score, 4) if ood_score is not None else np.full(n, np.nan),
            "unfamiliar": unfamiliar
            if unfamiliar is not None
            else pd.Series(pd.NA, index=range(n), dtype="boolean"),
        },
        columns=COLUMNS,
    )


def read_predictions(path) -> pd.DataFrame:
    """A predictions table as written (labels 0/1; `unfamiliar` True, False or missing)."""
    table = pd.read_csv(path, sep="\t", dtype={"path": str, "part": str})
    table["unfamiliar"] = table.unfamiliar.astype("boolean")
    return table
