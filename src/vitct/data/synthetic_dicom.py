"""The demo's synthetic slices as DICOM CT series, in the class layout (COVID/<case>/*.dcm),
for the DICOM demo (dataset.demo.format: dicom) and the tests.

Each case is one patient with one series: slices through the lungs drawn by the demo generator
(vitct.data.synthetic) at one size, and slices above and below the lungs that the lung-range
rule (vitct.data.series) must leave out. Grey levels become Hounsfield units by a monotone map
that puts the demo's dark lungs at -900 HU, its body at soft tissue and its ribs at bone, with
scanner noise; they are stored as a scanner stores them (unsigned, RescaleIntercept -1024) under
the headers a CT series carries, identifying ones included (patient name and id, birth date,
accession number, UIDs): made up, so that a test can show none of them reaches any output.
NOT real data: everything made from it says so.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vitct.atomic_files import write_output
from vitct.data.classes import CLASS_DIRS
from vitct.data.dicom import import_pydicom
from vitct.data.synthetic import make_slice

LUNG_SLICES = 8  # per series, through the lungs
ABOVE, BELOW = 2, 1  # slices of the series outside the lungs
SIDE = 256  # Rows and Columns (a scanner writes 512; the demo keeps it small)
SPACING_MM, THICKNESS_MM = 0.7, 5.0
# Demo grey level -> HU: air, lungs, body, ribs (monotone, so the slices keep their order)
GREY = [0.0, 50.0, 100.0, 145.0, 255.0]
HU = [-1000.0, -780.0, -100.0, 60.0, 1200.0]
INTERCEPT = -1024.0
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def to_hounsfield(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A demo slice's grey levels as integer HU, with scanner noise, clipped at -1024."""
    hu = np.interp(grey.astype(np.float64), GREY, HU) + rng.normal(0, 12, grey.shape)
    return np.clip(np.rint(hu), INTERCEPT, 3071)


def _square(img: Image.Image) -> np.ndarray:
    """The slice centred on a SIDE x SIDE field of air, as a scanner's field of view."""
    field = Image.new("L", (SIDE, SIDE), 0)
    field.paste(img, ((SIDE - img.width) // 2, (SIDE - img.height) // 2))
    return np.asarray(field)


def case_headers(rng: np.random.Generator, seed: int, case: str) -> dict:
    """Made-up identifying headers of one case (deterministic in seed and case)."""
    from pydicom.uid import generate_uid

    def uid(kind: str) -> str:
        return generate_uid(entropy_srcs=[str(seed), case, kind])

    return {
        "PatientName": f"SYNTHETIC^{''.join(rng.choice(list('BDFGKLMNPRSTVZ'), 7))}",
        "PatientID": f"MRN{int(rng.integers(10**7, 10**8))}",
        "PatientBirthDate": f"19{int(rng.integers(30, 99))}0{int(rng.integers(1, 10))}1"
        f"{int(rng.integers(0, 10))}",
        "PatientSex": str(rng.choice(["F", "M"])),
        "AccessionNumber": f"ACC{int(rng.integers(10**6, 10**7))}",
        "StudyID": f"{int(rng.integers(1000, 9999))}",
        "StudyInstanceUID": uid("study"),
        "SeriesInstanceUID": uid("series"),
        "FrameOfReferenceUID": uid("frame"),
    }


def write_case(folder: Path, rng: np.random.Generator, seed: int, case: str, covid: bool) -> int:
    """One patient's series into `folder` (IM0001.dcm, ... in scan order); the files written."""
    pydicom = import_pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    headers = case_headers(rng, seed, case)
    width = int(rng.integers(200, SIDE - 16))
    size = (width, int(width * rng.uniform(0.7, 0.9)))
    lungs = [False] * ABOVE + [True] * LUNG_SLICES + [False] * BELOW
    for k, with_lungs in enumerate(lungs, start=1):
        grey = _square(make_slice(rng, covid, size, with_lungs))
        stored = (to_hounsfield(grey, rng) - INTERCEPT).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(seed), case, str(k)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        for key, value in headers.items():
            setattr(ds, key, value)
        ds.Modality, ds.BodyPartExamined, ds.Manufacturer = "CT", "CHEST", "vitct synthetic"
        ds.InstitutionName = "vitct synthetic demo (NOT real data)"
        ds.StudyDate = ds.SeriesDate = "20200401"
        ds.SeriesNumber, ds.InstanceNumber = 2, k
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        # Head first: the first slice is the highest (largest z)
        ds.ImagePositionPatient = [
            -SIDE * SPACING_MM / 2,
            -SIDE * SPACING_MM / 2,
            -THICKNESS_MM * k,
        ]
        ds.PixelSpacing, ds.SliceThickness, ds.KVP = [SPACING_MM, SPACING_MM], THICKNESS_MM, 120
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = INTERCEPT, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = [40, -600], [400, 1500]  # soft tissue, lung
        ds.PixelData = stored.tobytes()
        write_output(
            folder / f"IM{k:04d}.dcm",
            lambda f, ds=ds: pydicom.dcmwrite(f, ds, enforce_file_format=True),
        )
    return len(lungs)


def generate_series(
    out_dir: str | Path, n_per_class: int, seed: int, progress: bool = True
) -> dict:
    """Cases with LUNG_SLICES slices through the lungs each, enough for n_per_class of them per
    class, into out_dir/COVID/caseNNN/ and out_dir/non-COVID/caseNNN/; returns the files per
    class (outside-the-lungs slices included)."""
    out_dir, counts = Path(out_dir), {}
    for label_index, class_dir in enumerate(CLASS_DIRS):
        rng = np.random.default_rng([seed, label_index, 1])  # one stream per class, as generate
        cases = math.ceil(n_per_class / LUNG_SLICES)
        counts[class_dir] = 0
        for i in tqdm(range(1, cases + 1), desc=class_dir, disable=not progress):
            case = f"{class_dir}-{i}"
            folder = out_dir / class_dir / f"case{label_index}{i:03d}"
            counts[class_dir] += write_case(folder, rng, seed, case, class_dir == "COVID")
    return counts
