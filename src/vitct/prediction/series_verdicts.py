"""One verdict per DICOM series, from the rows `Predictor.predict` gives its slices.

The slices read are those of the series' lung range (vitct.data.series.SLICE_RULE: the others
are left out, as training left them out); the series' probability is the mean of their
calibrated prob_covid, and its verdict COVID at 0.5 or above, as a slice's is. The mean, not a
vote or the maximum: it is calibrated as the slices are, and one odd slice moves it little.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from vitct.atomic_files import write_text
from vitct.data.classes import CLASS_NAMES
from vitct.data.nifti import volume_of
from vitct.data.series import SLICE_RULE

HOW = (
    f"slices chosen by their series' {SLICE_RULE}; combined by the mean of their calibrated "
    "prob_covid, COVID at 0.5 or above"
)
VERDICT_COLUMNS = [
    "series",
    "source",
    "slices",
    "read",
    "covid_slices",
    "prob_covid",
    "predicted",
    "unfamiliar_share",
    "error",
    "how",
]


def series_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """A row per series among the table's DICOM and NIfTI slices (series column): where it comes
    from (its folder, or its volume file), how many slices it has
    and how many were read, how many of those were called COVID, the mean prob_covid and the
    verdict, the share flagged unfamiliar, and an error where none could be read."""
    rows = []
    for key, group in table[table.series != ""].groupby("series", sort=False):
        read = group[(group.error == "") & (group.left_out == "")]
        prob = float(read.prob_covid.mean()) if len(read) else np.nan
        flagged = read.unfamiliar.dropna().astype(bool)
        rows.append(
            {
                "series": key,
                "source": _source(group.path.tolist()),
                "slices": len(group),
                "read": len(read),
                "covid_slices": int((read.predicted == CLASS_NAMES[1]).sum()),
                "prob_covid": prob,
                "predicted": CLASS_NAMES[int(prob >= 0.5)] if len(read) else "",
                "unfamiliar_share": float(flagged.mean()) if len(flagged) else np.nan,
                "error": "" if len(read) else "no slice of it was read: its rows say why",
                "how": HOW,
            }
        )
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def _source(paths: list[str]) -> str:
    """Where a series' slices come from: the folder that holds its files, or its volume."""
    volumes = {(volume_of(path) or (None,))[0] for path in paths}
    if len(volumes) == 1 and None not in volumes:
        return volumes.pop()
    try:
        common = os.path.commonpath(paths)
    except ValueError:  # URLs and local paths mixed
        return ""
    return os.path.dirname(common) if common in paths else common


def verdict_lines(verdicts: pd.DataFrame, shown: int = 20) -> list[str]:
    """A line per series for the terminal (the first `shown`, then how many more)."""
    lines = []
    for row in verdicts.head(shown).itertuples():
        where = row.source or row.series
        if row.error:
            lines.append(f"series {where}: {row.error}")
            continue
        flagged = (
            "" if np.isnan(row.unfamiliar_share) else f"; {row.unfamiliar_share:.0%} unfamiliar"
        )
        lines.append(
            f"series {where}: {row.predicted} (mean prob_covid {row.prob_covid:.3f} over "
            f"{row.read} of its {row.slices} slices; {row.covid_slices} called COVID{flagged})"
        )
    if len(verdicts) > shown:
        lines.append(f"... and {len(verdicts) - shown} more series (--series writes them all)")
    return lines


def write_verdicts(verdicts: pd.DataFrame, path) -> None:
    """The verdicts as CSV, probabilities rounded as the slices' are."""
    rounded = verdicts.round({"prob_covid": 6, "unfamiliar_share": 4})
    write_text(path, rounded.to_csv(index=False, columns=VERDICT_COLUMNS))
