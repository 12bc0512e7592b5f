"""NIfTI CT volumes (.nii, .nii.gz) as the slices the model reads, by DICOM's policy.

A volume is read as a DICOM series is (vitct.data.dicom, vitct.data.series): its voxels are
Hounsfield units (dcm2niix writes them so, by the scale the header carries), each axial slice is
windowed by the same lung window, and the slices of its lung range are read. The volume is
turned to the closest canonical orientation (RAS) and each axial slice shown as a radiologist
views it (anterior up, the patient's right on the left), as DICOM slices are stored. A volume
has no patient in its header: it is its own series and its own patient (one group that splits
and folds keep whole), keyed by a hash of its voxels.

Needs nibabel (the `dicom` extra); a volume whose values cannot be HU (no air near -1000: a
normalised or 8-bit export) is refused, as a DICOM slice without rescale tags is.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from vitct.data.dicom import INSTALL, LUNG_WINDOW, DicomError, DicomSlice, lung_share
from vitct.data.dicom import window as apply_window

SUFFIXES = (".nii", ".nii.gz")
NIFTI_MODE = "NIfTI"  # a slice's colour mode in the tables when it was read from a volume


SLICE_NAME = re.compile(r"^(?P<volume>.+)#z(?P<index>\d{4,})$")  # volume.nii.gz#z0012


class VolumeSlice(NamedTuple):
    """One axial slice of a NIfTI volume: the file, and the slice's index from the feet up.
    Its name (`volume.nii.gz#z0012`) is its path in the tables and the manifest."""

    path: Path
    index: int

    def __str__(self) -> str:
        return name_of(self.path, self.index)


def name_of(volume, index: int) -> str:
    return f"{volume}#z{index:04d}"


def is_nifti(path) -> bool:
    return isinstance(path, str | Path) and str(path).lower().endswith(SUFFIXES)


def volume_of(name: str) -> tuple[str, int] | None:
    """The volume and slice index a slice's name (`...ct.nii.gz#z0012`) names, else None."""
    found = SLICE_NAME.match(name)
    return (found["volume"], int(found["index"])) if found and is_nifti(found["volume"]) else None


def source_at(root: Path, relative: str) -> Path | VolumeSlice:
    """What a manifest path names under root: a file, or a volume's slice (`...#z0012`)."""
    volume = volume_of(relative)
    if volume and not (root / relative).exists():
        return VolumeSlice(root / volume[0], volume[1])
    return root / relative


@functools.lru_cache(maxsize=1)  # a volume's slices are read one after another
def _volume(path: Path) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """The volume in HU (x, y, z) in RAS orientation, float32, its voxel sizes in mm, and a
    hash of its voxels (its key: the same scan is the same patient wherever it lies)."""
    try:
        import nibabel
    except ImportError:
        raise DicomError(f"reading NIfTI needs nibabel: {INSTALL}") from None
    try:
        image = nibabel.as_closest_canonical(nibabel.load(path))
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as e:  # nibabel raises many kinds for damaged files
        raise DicomError(f"not a readable NIfTI volume: {str(e).splitlines()[0]}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DicomError(
            f"a NIfTI image of shape {data.shape}, not one CT volume (x, y, z): give one volume "
            "per file"
        )
    low, high = float(np.nanmin(data)), float(np.nanmax(data))
    if low > -500 or high <= low:
        raise DicomError(
            f"its values span {low:g} to {high:g}: not Hounsfield units (CT air is about -1000 "
            "HU); give the volume in HU, as dcm2niix writes it from the DICOM series"
        )
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    return data, zooms, hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()[:16]


def volume_slices(path: Path) -> list[VolumeSlice]:
    """The axial slices of a volume (reading it once, checked)."""
    data, _, _ = _volume(Path(path))
    return [VolumeSlice(Path(path), k) for k in range(data.shape[2])]


def read_volume_slice(
    item: VolumeSlice, lung_window: tuple[float, float] = LUNG_WINDOW, measure: bool = True
) -> tuple[Image.Image, DicomSlice]:
    """One slice as a grey image in the lung window, and its place in its volume."""
    data, zooms, key = _volume(Path(item.path))
    hu = data[::-1, ::-1, item.index].T  # rows anterior to posterior, the patient's right left
    # A volume is one patient's scan: its own group and series, keyed by its voxels
    info = DicomSlice(
        patient="p" + key,
        series="v" + key,
        position=item.index * zooms[2],
        order=float(item.index),
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # axial, after the canonical turn
        shape=tuple(int(n) for n in hu.shape),
        lung_share=lung_share(hu) if measure else float("nan"),
    )
    return Image.fromarray(apply_window(hu, *lung_window)), info
