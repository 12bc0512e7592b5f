"""Which slices of a DICOM series the model reads: one stated rule, the same in training (the
manifest step) and in `vitct predict`.

The model is trained on slices through the lungs, as the PNG datasets hold them; a scanner's
series also runs through the neck and the abdomen. A slice is kept when it lies in its series'
lung range (`SLICE_RULE`): from the first to the last slice, along the scan axis, whose aerated
lung is at least LUNG_RANGE_SHARE of the series' largest and MIN_LUNG_SHARE of the body. The
range is contiguous, so a slice in the middle whose lung is filled by consolidation (little
aerated lung: a severe case) is kept, not dropped.

A series must also be one stack: slices of several sizes or orientations under one
SeriesInstanceUID (a localiser, a reformat or a copy mixed in) are refused together, with one
message, and the other series are still read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import NamedTuple

import numpy as np

from vitct.data.dicom import DICOM_MODE, LUNG_HU, LUNG_WINDOW, DicomSlice
from vitct.data.nifti import NIFTI_MODE

LUNG_RANGE_SHARE = 0.25  # of the series' largest lung share
MIN_LUNG_SHARE = 0.05  # of the body: below it a slice shows no lung
# How the reasons of the slices the rule leaves out begin (the report counts them by these)
OUTSIDE, NO_LUNG = "outside its series' lung range", "no lung in "
SLICE_RULE = (
    "lung range: the slices from the first to the last along the scan axis whose aerated lung "
    f"({LUNG_HU[0]:g} to {LUNG_HU[1]:g} HU inside the body) covers at least "
    f"{LUNG_RANGE_SHARE:.0%} of the series' largest and {MIN_LUNG_SHARE:.0%} of the body"
)


def _axis_order(slices: list[DicomSlice]) -> list[int]:
    """Indices in scan-axis order: by position, else instance number, else as given."""
    for key in ("position", "order"):
        values = [getattr(s, key) for s in slices]
        if all(v is not None for v in values):
            return sorted(range(len(slices)), key=lambda k: (values[k], k))
    return list(range(len(slices)))


def _mixed(slices: list[DicomSlice]) -> str | None:
    """Why the slices are no single stack (several sizes or orientations), or None."""
    for what, values in (
        ("sizes", [f"{s.shape[1]}x{s.shape[0]}" for s in slices]),
        ("orientations", [str(s.orientation) if s.orientation else "none" for s in slices]),
    ):
        counts = Counter(values)
        if len(counts) > 1:
            found = ", ".join(f"{v} on {n} slice{'s' * (n > 1)}" for v, n in counts.most_common())
            return (
                f"its series mixes slice {what} ({found}): a localiser, a reformat or another "
                "series under the same SeriesInstanceUID; put each stack in its own series "
                "(or folder) and leave out the others"
            )
    return None


def _outside_lung_range(slices: list[DicomSlice]) -> list[str | None]:
    """Why each slice of one stack lies outside its lung range (None: inside, it is read)."""
    shares = np.array([s.lung_share for s in slices])
    floor = max(LUNG_RANGE_SHARE * shares.max(), MIN_LUNG_SHARE)
    order = _axis_order(slices)
    inside = [k for k in order if shares[k] >= floor]
    if not inside:
        reason = (
            f"{NO_LUNG}{'this slice' if len(slices) == 1 else 'its series'} (aerated lung "
            f"{shares.max():.0%} of the body at most; {SLICE_RULE})"
        )
        return [reason] * len(slices)
    first, last = order.index(inside[0]), order.index(inside[-1])
    kept = set(order[first : last + 1])
    return [
        None
        if k in kept
        else (
            f"{OUTSIDE} (aerated lung {shares[k]:.0%} of the body, the "
            f"series' largest {shares.max():.0%}; {SLICE_RULE})"
        )
        for k in range(len(slices))
    ]


class Choice(NamedTuple):
    """Per slice: `error`, why its series cannot be read at all (no single stack), and
    `left_out`, why the slice rule leaves it out (outside the lung range); None where none."""

    error: list[str | None]
    left_out: list[str | None]


def choose_slices(slices: list[DicomSlice | None]) -> Choice:
    """Apply the series checks and the slice rule to each slice (None: not a DICOM slice,
    always read). Slices are grouped by series; one without a SeriesInstanceUID is its own."""
    groups = defaultdict(list)
    for k, s in enumerate(slices):
        if s is not None:
            groups[s.series or f"#{k}"].append(k)
    error: list[str | None] = [None] * len(slices)
    left_out: list[str | None] = [None] * len(slices)
    for members in groups.values():
        stack = [slices[k] for k in members]
        mixed = _mixed(stack)
        reasons = [mixed] * len(stack) if mixed else _outside_lung_range(stack)
        for k, reason in zip(members, reasons, strict=True):
            (error if mixed else left_out)[k] = reason
    return Choice(error, left_out)


def input_record(modes) -> dict:
    """What a model was trained on, for its file's preprocessing (vitct.model.artifact): the
    kind of input (CT in Hounsfield units: DICOM series or NIfTI volumes; 8-bit slices; or
    both), and for HU the window and the slice rule, so that `vitct predict` converts DICOM and
    NIfTI exactly as training did."""
    hounsfield = [mode in (DICOM_MODE, NIFTI_MODE) for mode in modes]
    kind = "hounsfield" if all(hounsfield) else "mixed" if any(hounsfield) else "slices"
    record = {"kind": kind}
    if any(hounsfield):
        record |= {"window": list(LUNG_WINDOW), "slice_rule": SLICE_RULE}
    return record
