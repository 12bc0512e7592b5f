"""What a finished run is scored on, and the one table every scoring writes.

A run on a cross-validation fold is scored on its held-out fold; every run on the locked test
split and on each external set. One predictions table per run (and per baseline and fold) holds
them all, one row per image and part: every summary (the cross-validation headline, the locked
test, the external sets, the ablation) is computed from these tables (vitct.evaluation.summaries).

A run's `prob_covid` is its calibrated COVID probability (the model file's temperature, as
`vitct predict` gives it) and `prob_raw` the probability before temperature scaling, so the
summaries can say what calibration bought; a baseline has no temperature (both the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vitct.data.duplicates import near_duplicate_groups, nearest_train
from vitct.data.partition import run_data, run_parts
from vitct.data.site import EVAL

HELD_OUT, TEST = "held_out", "test"
EXTERNAL_PREFIX = "external:"
COLUMNS = [
    "part",
    "source",
    "path",
    "label",
    "prob_raw",
    "prob_covid",
    "group",
    "nearest_seen",
    "ood_score",
    "unfamiliar",
]


def external_part(name: str) -> str:
    """The `part` of a run's predictions on the external set `name`."""
    return EXTERNAL_PREFIX + name


PART_FIELDS = ("x", "y", "paths", "grey", "thumbnails", "groups", "sources")


@dataclass
class Part:
    """Images of one part: model input, labels, paths, grey-level histograms as decoded,
    thumbnails, near-duplicate groups and the source of each."""

    name: str
    x: np.ndarray
    y: np.ndarray
    paths: np.ndarray
    grey: np.ndarray
    thumbnails: np.ndarray
    groups: np.ndarray
    sources: np.ndarray | None = None  # one source (several training sources) for all

    @classmethod
    def of(cls, name: str, data: dict, key: str | None = None) -> Part:
        key = key or name
        return cls(
            name,
            *(data[f"{key}_{k}"] for k in PART_FIELDS),
        )


def seen_and_scored(
    cache: dict,
    table: pd.DataFrame,
    fold: str,
    split: dict,
    external: dict[str, dict],
    site_eval: dict[str, set] | None = None,
) -> tuple[Part, list[Part]]:
    """The images a run on `fold` saw (its training and inner validation images, as one part:
    what the baselines fit and nearest_seen compares with), and the parts it is scored on: its
    held-out fold (a cross-validation run; a left-out source), the locked test and each external
    set (name -> its cache), whose near-duplicate groups are found here with the same threshold.
    An adaptation site (a name of `site_eval`) is scored on its evaluation part alone (those
    paths): its pool is what adaptation draws from."""
    parts = run_parts(table, fold, split["val"], split["seed"])
    wanted = ("train", "val", *(p for p in (HELD_OUT, TEST) if (parts == p).any()))
    data = run_data(cache, table, parts, wanted)
    seen = Part(
        "seen",
        *(np.concatenate([data[f"train_{k}"], data[f"val_{k}"]]) for k in PART_FIELDS),
    )
    scored = [Part.of(p, data) for p in (HELD_OUT, TEST) if f"{p}_x" in data]
    for name, images in external.items():
        keep = np.ones(len(images["y"]), bool)
        if site_eval and name in site_eval:
            keep = np.isin(images["paths"], list(site_eval[name]))
        groups = near_duplicate_groups(
            images["thumbnails"][keep], split["near_duplicate_threshold"]
        )
        scored.append(
            Part(
                external_part(name),
                *(images[k][keep] for k in ("x", "y", "paths", "histograms", "thumbnails")),
                groups,
                np.full(keep.sum(), name, dtype=object),
            )
        )
    return seen, scored


def site_evaluation_part(site_split, site: str | None) -> dict[str, set] | None:
    """The adaptation site's evaluation part, as seen_and_scored takes it (None without a
    site), from the partition's site split table."""
    if not site:
        return None
    split = pd.read_csv(site_split, sep="\t", keep_default_na=False)
    return {site: set(split.path[split.part == EVAL])}


class ChangedClassError(AssertionError):
    """A temperature changed a predicted class: a positive one never does."""


def check_same_classes(prob_raw, prob) -> None:
    """Raise ChangedClassError unless every image gets the same class (COVID at 0.5) from the
    probability before temperature scaling and after it."""
    changed = int(((np.asarray(prob_raw) >= 0.5) != (np.asarray(prob) >= 0.5)).sum())
    if changed:
        raise ChangedClassError(
            f"temperature scaling changed the predicted class of {changed} image(s); a positive "
            "temperature keeps every class: the logits or the temperature are wrong"
        )


def predictions(
    part: Part, prob: np.ndarray, seen: Part, ood_score=None, unfamiliar=None, prob_raw=None
) -> pd.DataFrame:
    """One part's rows of a predictions table. prob: the COVID probability (a run's after its
    temperature), prob_raw: before it (the same as prob when not given: a baseline), checked
    to give every image the same class; nearest_seen: the cosine similarity of each image's
    thumbnail to the most similar one the model saw (near 1: a near-copy of a training slice);
    ood_score and unfamiliar: the model's out-of-distribution score and flag (empty for a
    baseline, or a model file without a reference)."""
    n = len(part.y)
    prob_raw = prob if prob_raw is None else prob_raw
    check_same_classes(prob_raw, prob)
    _, similarity = nearest_train(seen.thumbnails, part.thumbnails)
    return pd.DataFrame(
        {
            "part": part.name,
            "source": part.sources if part.sources is not None else "",
            "path": part.paths,
            "label": part.y.astype(int),
            "prob_raw": np.round(np.asarray(prob_raw, dtype=float), 6),
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
    table = pd.read_csv(path, sep="\t", dtype={"path": str, "part": str, "source": str})
    table["source"] = table.source.fillna("")
    table["unfamiliar"] = table.unfamiliar.astype("boolean")
    return table
