"""DICOM CT slices to the grey slices the model reads.

A scanner stores a CT slice as integers that become Hounsfield units (HU) by the header's
rescale (HU = stored x RescaleSlope + RescaleIntercept); a reader then chooses a window, the HU
range spread over black to white. The PNG datasets the model is trained on were exported by
such a reader, so a DICOM slice is converted the same way, by one stated lung window
(`LUNG_WINDOW`: level -600 HU, width 1500 HU, the radiologists' lung window), not by the
header's own window, which differs from scanner to scanner.

Compressed pixel data (JPEG Lossless, as many scanners store it) needs a decoder plugin beside
pydicom (pylibjpeg with pylibjpeg-libjpeg: the `dicom` extra); without one the message names it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from vitct.errors import UserError

# (level, width) in HU: -1350 HU and below black, +150 HU and above white.
LUNG_WINDOW = (-600.0, 1500.0)
INSTALL = "pip install 'vitct[dicom]' (pydicom, pylibjpeg and pylibjpeg-libjpeg)"
# A DICOM file's first 128 bytes are a preamble, then these four.
MAGIC = b"DICM"
DICOM_MODE = "DICOM"  # a slice's colour mode in the manifest when it was read from DICOM
LUNG_HU = (-1000.0, -400.0)  # aerated lung
SHARE_SIDE = 128  # the lung share is measured on a copy this size: masks are slow at 512 px


class DicomError(UserError, ValueError):
    """A DICOM file that is not a usable CT slice; the message says why and what to do."""


def is_dicom(source) -> bool:
    """Whether `source` (a path or a seekable file object) is a DICOM file, by its magic bytes
    (a .dcm suffix is not required, nor enough)."""
    if isinstance(source, str | Path):
        try:
            with open(source, "rb") as f:
                return f.read(132)[128:] == MAGIC
        except OSError:
            return False
    try:
        start = source.tell()
        head = source.read(132)
        source.seek(start)
    except (AttributeError, OSError, ValueError):
        return False
    return isinstance(head, bytes) and head[128:] == MAGIC


def recorded_window(preprocessing: dict) -> tuple[float, float]:
    """The lung window a model file's preprocessing records (vitct.data.series.input_record);
    LUNG_WINDOW for a file that records none."""
    level, width = preprocessing.get("input", {}).get("window", LUNG_WINDOW)
    return float(level), float(width)


def window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """HU to uint8 grey levels: level - width/2 and below 0, level + width/2 and above 255."""
    low = level - width / 2
    scaled = (np.asarray(hu, dtype=np.float64) - low) / width * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def hounsfield(dataset) -> np.ndarray:
    """The slice's pixels in HU by its rescale tags; a CT slice without them cannot be
    converted, so it is refused rather than guessed."""
    if "PixelData" not in dataset and not ("Modality" in dataset or "SOPClassUID" in dataset):
        raise DicomError(
            "not a readable DICOM file: no pixel data and no header saying what it is "
            "(truncated or damaged?)"
        )
    if "PixelData" not in dataset:
        kind = getattr(dataset, "Modality", "") or getattr(dataset, "SOPClassUID", "unknown")
        raise DicomError(
            f"a DICOM file without pixel data (kind {kind}: a report, a dose sheet or a "
            "structured document?), not a CT slice; give the image files of the series"
        )
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomError(
            f"a multi-frame DICOM image ({frames} frames): give one slice per file, as CT series "
            "store them"
        )
    missing = [tag for tag in ("RescaleSlope", "RescaleIntercept") if tag not in dataset]
    if missing:
        raise DicomError(
            f"no {' or '.join(missing)} in the header: its stored values cannot be turned into "
            "Hounsfield units; export the slice with its rescale tags"
        )
    try:
        stored = dataset.pixel_array
    except Exception as e:  # pydicom raises RuntimeError/NotImplementedError without a plugin
        syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        raise DicomError(
            f"cannot decode its pixel data ({name}): {str(e).splitlines()[0]}; a decoder "
            f"plugin is missing: {INSTALL}"
        ) from None
    if stored.ndim != 2:
        raise DicomError(f"pixel data of shape {stored.shape}, not one grey slice")
    return stored.astype(np.float64) * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)


def import_pydicom():
    """pydicom, or a DicomError that says how to install it (it is an optional extra)."""
    try:
        import pydicom
    except ImportError:
        raise DicomError(f"reading DICOM needs pydicom: {INSTALL}") from None
    return pydicom


def hashed(value) -> str:
    """A header value as a short hash: a stable key with nothing identifying in it."""
    text = str(value or "").strip()
    return hashlib.sha256(text.encode()).hexdigest()[:16] if text else ""


def patient_key(dataset) -> str:
    """The slice's patient (PatientID, else StudyInstanceUID) as a hash: the group that splits
    and folds keep together, with no identifying header value in any output; "" for none."""
    value = dataset.get("PatientID", "") or dataset.get("StudyInstanceUID", "")
    return "p" + hashed(value) if hashed(value) else ""


class DicomSlice(NamedTuple):
    """What a series needs to know of one of its slices (vitct.data.series; a DICOM file, or a
    NIfTI volume's slice, vitct.data.nifti), from the header and the pixels, none of it
    identifying: hashed patient and series keys, where the slice lies
    along the scan axis, its orientation and size, and how much of its body is aerated lung."""

    patient: str
    series: str  # "s" + hash of SeriesInstanceUID; "" for a file without one
    position: float | None  # mm along the slice normal (ImagePositionPatient), else None
    order: float | None  # InstanceNumber, the fallback order
    orientation: tuple  # ImageOrientationPatient, rounded; () where absent
    shape: tuple[int, int]
    lung_share: float  # lung_share(); NaN where not measured (the slice is only shown)


def _floats(value) -> list[float]:
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return []


def lung_share(hu: np.ndarray) -> float:
    """The share of the body (vitct.data.model_input.body_mask on the lung-windowed slice)
    that is aerated lung (LUNG_HU)."""
    from vitct.data.model_input import body_mask

    step = max(1, int(np.ceil(max(hu.shape) / SHARE_SIDE)))
    small = np.asarray(hu, dtype=np.float64)[::step, ::step]
    body = body_mask(window(small, *LUNG_WINDOW))
    lung = body & (small >= LUNG_HU[0] - 100) & (small <= LUNG_HU[1])  # noise below -1000
    return float(lung.sum() / max(1, body.sum()))


def slice_info(dataset, hu: np.ndarray, measure: bool = True) -> DicomSlice:
    """The slice's place in its series: orientation and position from the header (the position
    projected on the slice normal, as viewers order a series), and its lung share (with
    `measure`: most of a read's time, and needed only to choose a series' slices)."""
    orientation = _floats(dataset.get("ImageOrientationPatient", None))
    origin = _floats(dataset.get("ImagePositionPatient", None))
    position = None
    if len(orientation) == 6 and len(origin) == 3:
        normal = np.cross(orientation[:3], orientation[3:])
        position = float(np.dot(normal, origin))
    number = dataset.get("InstanceNumber", None)
    series = hashed(dataset.get("SeriesInstanceUID", ""))
    return DicomSlice(
        patient=patient_key(dataset),
        series="s" + series if series else "",
        position=position,
        order=float(number) if number not in (None, "") else None,
        orientation=tuple(round(v, 3) for v in orientation) if len(orientation) == 6 else (),
        shape=tuple(int(n) for n in hu.shape),
        lung_share=lung_share(hu) if measure else float("nan"),
    )


def read_dicom(
    source, lung_window: tuple[float, float] = LUNG_WINDOW, measure: bool = True
) -> tuple[Image.Image, DicomSlice]:
    """A DICOM CT slice (path or file object) as a grey image, its HU in the lung window, and
    what its series needs to know of it (DicomSlice), from one read of the file."""
    pydicom = import_pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(source)
    except (InvalidDicomError, EOFError, OSError) as e:
        raise DicomError(f"not a readable DICOM file: {e}") from None
    hu = hounsfield(dataset)
    return Image.fromarray(window(hu, *lung_window)), slice_info(dataset, hu, measure)
