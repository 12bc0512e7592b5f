"""DICOM CT slices: Hounsfield units by the rescale tags, one stated lung window, the same model
input as the PNG a reader would export, one clear message for each unusable file, patients from
the header as hashed groups, and `vitct predict` on a folder of series (synthetic slices written
with pydicom; the real sample's JPEG Lossless slices when VITCT_REAL_DATA is set)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import real_data_root, vitct
from PIL import Image

pydicom = pytest.importorskip(
    "pydicom", reason="pydicom is not installed: pip install -e '.[dicom]' (.ci/run does)"
)
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid  # noqa: E402

from vitct.data.dicom import LUNG_WINDOW, DicomError, hounsfield, is_dicom, window  # noqa: E402
from vitct.data.duplicates import near_duplicate_groups  # noqa: E402
from vitct.data.images import load_input  # noqa: E402
from vitct.data.manifest import build_manifest  # noqa: E402

INTERCEPT = -1024.0


def chest_hu(size=64, seed=0) -> np.ndarray:
    """A CT-like slice in HU: air around a soft-tissue body (40 HU) holding two lungs (-850)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    hu = np.full((size, size), -1000.0)
    hu[((xx - 0.5) / 0.45) ** 2 + ((yy - 0.5) / 0.35) ** 2 < 1] = 40.0
    for cx in (0.32, 0.68):
        hu[((xx - cx) / 0.13) ** 2 + ((yy - 0.5) / 0.22) ** 2 < 1] = -850.0
    return np.clip(np.round(hu + rng.normal(0, 20, hu.shape)), -1024, None)  # as scanners store


def ct_dataset(hu: np.ndarray, slope=1.0, intercept=INTERCEPT, **tags) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CT", "PATIENT-0001"
    stored = np.round((hu - intercept) / slope).astype(np.uint16)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored.tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_the_window_maps_hounsfield_units_as_computed_by_hand():
    level, width = LUNG_WINDOW  # -600, 1500: -1350 HU black, +150 HU white
    hu = np.array([-2000, -1350, -1000, -600, 150, 3000])
    # (hu + 1350) / 1500 * 255, rounded half to even, clipped
    assert window(hu, level, width).tolist() == [0, 0, 60, 128, 255, 255]
    assert window(np.array([-1000.0]), -500, 1000).tolist() == [0]  # the lower edge is black


def test_stored_values_become_hounsfield_units_by_the_rescale_tags():
    hu = chest_hu()
    for slope, intercept in ((1.0, -1024.0), (2.0, -2048.0), (0.5, -1024.0)):
        assert np.allclose(hounsfield(ct_dataset(hu, slope, intercept)), hu, atol=slope / 2)


def test_a_dicom_slice_gives_the_model_input_of_the_png_a_reader_would_export(tmp_path):
    hu = chest_hu()
    dcm = write(ct_dataset(hu), tmp_path / "slice")  # no suffix: known by its magic bytes
    png = tmp_path / "slice.png"
    Image.fromarray(window(hu, *LUNG_WINDOW)).save(png)
    assert is_dicom(dcm) and not is_dicom(png)
    for mask, intensity in (("none", "raw"), ("lungs", "standardise")):
        from_dicom, hist_dicom, _ = load_input(dcm, 32, mask, intensity)
        from_png, hist_png, _ = load_input(png, 32, mask, intensity)
        assert np.array_equal(from_dicom, from_png) and np.array_equal(hist_dicom, hist_png)
    with open(dcm, "rb") as f:  # a file object too, as the Python API passes one
        assert np.array_equal(load_input(io.BytesIO(f.read()), 32)[0], load_input(png, 32)[0])


def unusable(tmp_path) -> dict[str, Path]:
    hu = chest_hu()
    no_rescale = ct_dataset(hu)
    del no_rescale.RescaleSlope, no_rescale.RescaleIntercept
    report = ct_dataset(hu, Modality="SR")
    del report.PixelData
    frames = ct_dataset(np.concatenate([hu, hu]), NumberOfFrames=2)
    frames.Rows = hu.shape[0]
    compressed = ct_dataset(hu)
    compressed.file_meta.TransferSyntaxUID = JPEG2000Lossless
    compressed.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])
    return {
        "no Rescale": write(no_rescale, tmp_path / "bad" / "no_rescale.dcm"),
        "without pixel data (kind SR": write(report, tmp_path / "bad" / "report.dcm"),
        "multi-frame DICOM image (2 frames)": write(frames, tmp_path / "bad" / "frames.dcm"),
        "cannot decode its pixel data (JPEG 2000": write(
            compressed, tmp_path / "bad" / "jpeg2000.dcm"
        ),
    }


def test_each_unusable_dicom_file_gets_its_own_message(tmp_path):
    for expected, path in unusable(tmp_path).items():
        with pytest.raises(DicomError) as caught:
            load_input(path, 32)
        message = str(caught.value)
        assert expected in message and "\n" not in message, message
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(bytes(128) + b"DICM" + b"\x02\x00")
    with pytest.raises(DicomError, match="not a readable DICOM file"):
        load_input(truncated, 32)


def predictions(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def test_vitct_predict_classifies_a_folder_of_series_and_names_each_bad_file(model_file, tmp_path):
    scans = tmp_path / "scans"
    for patient in range(2):
        for k in range(3):
            write(ct_dataset(chest_hu(seed=10 * patient + k)), scans / f"p{patient}" / f"{k}.dcm")
    bad = unusable(scans)
    out = tmp_path / "predictions.csv"
    proc = vitct("predict", str(model_file), str(scans), "-o", str(out))
    assert proc.returncode == 1, proc.stderr  # some inputs could not be classified
    rows = predictions(out)
    assert len(rows) == 6 + len(bad)
    good = [row for name, row in rows.items() if "/bad/" not in name]
    assert len(good) == 6 and all(row["predicted"] and not row["error"] for row in good)
    for expected, path in bad.items():
        assert expected in rows[str(path)]["error"] and not rows[str(path)]["predicted"]


def test_the_real_sample_decodes_its_jpeg_lossless_slices_into_lung_windowed_slices():
    pytest.importorskip("pylibjpeg", reason="no JPEG Lossless decoder: pip install -e '.[dicom]'")
    files = sorted((real_data_root() / "dicom-ct-md-sample").rglob("*.dcm"))
    assert len(files) == 30
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"  # JPEG Lossless
        hu = hounsfield(ds)
        assert hu.shape == (512, 512) and hu.min() <= -1000 < 0 < hu.max()  # air and tissue
        grey = load_input(path, 64)[0]
        # air (-1000 HU) is dark grey in the lung window (60), soft tissue and bone white
        assert grey.shape == (64, 64) and grey.min() <= 70 and grey.max() > 200


def test_a_patients_slices_join_one_group_however_unlike_they_look():
    thumbnails = np.random.default_rng(0).normal(size=(6, 32, 32))  # no two alike
    assert len(set(near_duplicate_groups(thumbnails, 0.95))) == 6
    groups = near_duplicate_groups(thumbnails, 0.95, ["a", "", "b", "a", "b", ""])
    assert groups[0] == groups[3] and groups[2] == groups[4]
    assert len(set(groups)) == 4  # the two without a patient stay apart


def test_a_manifest_of_dicom_series_keys_each_slice_to_a_hash_of_its_patient(tmp_path):
    names = {"COVID": ["Doe^Jane", "Roe^Richard"], "non-COVID": ["Poe^Edgar"]}
    for class_dir, patients in names.items():
        for p, patient in enumerate(patients):
            for k in range(3):
                ds = ct_dataset(chest_hu(seed=100 * p + k), PatientID=patient)
                write(ds, tmp_path / class_dir / f"series{p}" / f"{k}.dcm")
    manifest, rejects = build_manifest(tmp_path, progress=False)
    assert len(manifest) == 9 and rejects.empty and set(manifest["mode"]) == {"DICOM"}
    per_series = manifest.groupby(manifest.path.str.rsplit("/", n=1).str[0]).patient.nunique()
    assert per_series.eq(1).all() and manifest.patient.nunique() == 3
    text = manifest.to_csv(sep="\t")
    assert not any(name in text or name.split("^")[0] in text for p in names.values() for name in p)
