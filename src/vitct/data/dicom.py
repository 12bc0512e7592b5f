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

import numpy as np
from PIL import Image

from vitct.errors import UserError

# (level, width) in HU: -1350 HU and below black, +150 HU and above white.
LUNG_WINDOW = (-600.0, 1500.0)
INSTALL = "pip install 'vitct[dicom]' (pydicom, pylibjpeg and pylibjpeg-libjpeg)"
# A DICOM file's first 128 bytes are a preamble, then these four.
MAGIC = b"DICM"
DICOM_MODE = "DICOM"  # a slice's colour mode in the manifest when it was read from DICOM


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


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise DicomError(f"reading DICOM needs pydicom: {INSTALL}") from None
    return pydicom


def patient_key(dataset) -> str:
    """The slice's patient (PatientID, else StudyInstanceUID) as a hash: the group that splits
    and folds keep together, with no identifying header value in any output; "" for none."""
    value = str(dataset.get("PatientID", "") or dataset.get("StudyInstanceUID", "") or "")
    return "p" + hashlib.sha256(value.encode()).hexdigest()[:16] if value.strip() else ""


def read_dicom(source, lung_window: tuple[float, float] = LUNG_WINDOW) -> tuple[Image.Image, str]:
    """A DICOM CT slice (path or file object) as a grey image, its HU in the lung window, and
    its patient key (patient_key), from one read of the file."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(source)
    except (InvalidDicomError, EOFError, OSError) as e:
        raise DicomError(f"not a readable DICOM file: {e}") from None
    return Image.fromarray(window(hounsfield(dataset), *lung_window)), patient_key(dataset)
