"""DICOM series: the lung-range slice rule (the same at the manifest step and in `vitct
predict`), one verdict per series stating how its slices were chosen and combined, a series
that is no single stack refused with one message while the others are read, the model file's
record of what it was trained on (and `vitct predict` converting DICOM by that record), and the
synthetic DICOM demo series (vitct.data.synthetic_dicom)."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_MODEL, vitct
from PIL import Image

pydicom = pytest.importorskip(
    "pydicom", reason="pydicom is not installed: pip install -e '.[dicom]' (.ci/run does)"
)
from pydicom.uid import generate_uid  # noqa: E402
from test_dicom import ct_dataset, write  # noqa: E402

from vitct.data.dicom import LUNG_WINDOW, window  # noqa: E402
from vitct.data.duplicates import near_duplicate_groups  # noqa: E402
from vitct.data.images import read_slice  # noqa: E402
from vitct.data.manifest import build_manifest  # noqa: E402
from vitct.data.series import SLICE_RULE, choose_slices, input_record  # noqa: E402
from vitct.data.synthetic_dicom import ABOVE, BELOW, LUNG_SLICES, generate_series  # noqa: E402
from vitct.model.artifact import save_artifact  # noqa: E402
from vitct.model.settings import ViTConfig  # noqa: E402
from vitct.model.vit import ViT  # noqa: E402
from vitct.prediction.predictor import InputKindWarning, load_model  # noqa: E402
from vitct.prediction.series_verdicts import series_verdicts  # noqa: E402

SIDE = 64


def slice_hu(kind: str, seed: int = 0) -> np.ndarray:
    """A slice in HU: air around a soft-tissue body, with two aerated lungs ("lungs"), with
    lungs filled by consolidation ("consolidated": soft tissue where the air was) or none
    ("neck")."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE] / SIDE
    hu = np.full((SIDE, SIDE), -1000.0)
    hu[((xx - 0.5) / 0.45) ** 2 + ((yy - 0.5) / 0.35) ** 2 < 1] = 40.0
    lung = {"lungs": -850.0, "consolidated": 30.0, "neck": None}[kind]
    if lung is not None:
        for cx in (0.32, 0.68):
            hu[((xx - cx) / 0.13) ** 2 + ((yy - 0.5) / 0.22) ** 2 < 1] = lung
    return np.clip(np.round(hu + rng.normal(0, 20, hu.shape)), -1024, None)


def write_series(folder, kinds, names=None, series_uid=None, patient="PATIENT-1", **tags):
    """One series in scan order (slice k at z = -5k); file names `names` (default k.dcm)."""
    series_uid = series_uid or generate_uid()
    paths = []
    for k, kind in enumerate(kinds):
        ds = ct_dataset(
            slice_hu(kind, seed=k),
            PatientID=patient,
            SeriesInstanceUID=series_uid,
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            ImagePositionPatient=[0, 0, -5.0 * k],
            InstanceNumber=k + 1,
            **tags,
        )
        name = names[k] if names else f"{k}.dcm"
        paths.append(write(ds, folder / name))
    return paths


KINDS = ["neck", "neck", "lungs", "consolidated", "lungs", "lungs", "neck"]
IN_RANGE = [False, False, True, True, True, True, False]


def test_the_lung_range_is_contiguous_along_the_scan_axis_whatever_the_file_names(tmp_path):
    # File names in the opposite order to the slices' positions: the header orders them.
    names = [f"{9 - k}.dcm" for k in range(len(KINDS))]
    paths = write_series(tmp_path / "COVID" / "s1", KINDS, names)
    write_series(tmp_path / "non-COVID" / "s2", ["lungs"] * 3, patient="PATIENT-2")
    manifest, rejects = build_manifest(tmp_path, progress=False)
    kept = {f"COVID/s1/{p.name}" for p, inside in zip(paths, IN_RANGE, strict=True) if inside}
    assert set(manifest.path[manifest.class_dir == "COVID"]) == kept
    # the consolidated slice (little aerated lung) is kept: it lies inside the range
    assert "COVID/s1/6.dcm" in kept
    assert len(rejects) == 3 and rejects.reason.str.startswith("outside its series' lung").all()
    assert all(SLICE_RULE in reason for reason in rejects.reason)
    assert manifest.series.nunique() == 2 and manifest.series.str.startswith("s").all()


def test_a_series_without_lungs_and_a_slice_alone_follow_the_same_rule(tmp_path):
    neck = [read_slice(p).dicom for p in write_series(tmp_path / "a", ["neck"] * 2)]
    alone = read_slice(write(ct_dataset(slice_hu("lungs")), tmp_path / "alone.dcm")).dicom
    choice = choose_slices([*neck, None, alone])  # None: a PNG, always read
    assert choice.error == [None] * 4
    assert all("no lung in its series" in r for r in choice.left_out[:2])
    assert choice.left_out[2:] == [None, None]


def test_a_series_that_is_no_single_stack_is_refused_with_one_message_and_the_rest_read(
    tmp_path, model_file
):
    scans = tmp_path / "scans"
    write_series(scans / "good", ["lungs"] * 3, patient="P-GOOD")
    sizes = write_series(scans / "sizes", ["lungs"] * 3, patient="P-SIZES")
    small = ct_dataset(slice_hu("lungs")[:48, :48], **_tags_of(sizes[0]), InstanceNumber=9)
    write(small, scans / "sizes" / "9.dcm")
    turned = write_series(scans / "turned", ["lungs"] * 3, patient="P-TURNED")
    ds = pydicom.dcmread(turned[1])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # a sagittal reformat mixed in
    ds.save_as(turned[1])
    out = tmp_path / "p.csv"
    proc = vitct("predict", str(model_file), str(scans), "-o", str(out))
    assert proc.returncode == 1, proc.stderr
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    by_folder = {name: [r for r in rows if f"/{name}/" in r["path"]] for name in ("good", "sizes")}
    assert all(r["predicted"] and not r["error"] for r in by_folder["good"])
    (message,) = {r["error"] for r in by_folder["sizes"]}  # one message for the series
    assert "mixes slice sizes (64x64 on 3 slices, 48x48 on 1 slice)" in message
    turned_rows = [r for r in rows if "/turned/" in r["path"]]
    assert all("mixes slice orientations" in r["error"] for r in turned_rows)
    assert "no slice of it was read" in proc.stderr  # its verdict says so


def _tags_of(path) -> dict:
    ds = pydicom.dcmread(path)
    keys = ("PatientID", "SeriesInstanceUID", "ImageOrientationPatient", "ImagePositionPatient")
    return {key: ds.get(key) for key in keys}


def test_each_series_gets_one_verdict_from_the_mean_of_its_lung_range(tmp_path, model_file):
    scans = tmp_path / "scans"
    write_series(scans / "a", KINDS, patient="P-A")
    write_series(scans / "b", ["lungs"] * 3, patient="P-B")
    with pytest.warns(InputKindWarning, match="trained on 8-bit slices"):
        table = load_model(model_file).predict(scans)
    assert len(table) == len(KINDS) + 3 and (table.error == "").all()
    a = table[table.path.str.contains("/a/")]
    assert (a.left_out != "").tolist() == [not k for k in IN_RANGE]
    assert a.prob_covid[a.left_out != ""].isna().all()  # left out: not classified
    verdicts = series_verdicts(table).set_index("source")
    assert verdicts.loc[str(scans / "a"), ["slices", "read"]].tolist() == [len(KINDS), 4]
    for folder, rows in ((scans / "a", a), (scans / "b", table[table.path.str.contains("/b/")])):
        verdict = verdicts.loc[str(folder)]
        read = rows[rows.left_out == ""]
        assert verdict.prob_covid == pytest.approx(read.prob_covid.mean())
        assert verdict.predicted == ("COVID" if read.prob_covid.mean() >= 0.5 else "non-COVID")
        assert verdict.covid_slices == (read.predicted == "COVID").sum()
        assert "lung range" in verdict.how and "mean of their calibrated prob_covid" in verdict.how
    out, series = tmp_path / "p.csv", tmp_path / "series.csv"
    proc = vitct("predict", str(model_file), str(scans), "-o", str(out), "--series", str(series))
    assert proc.returncode == 0, proc.stderr  # left out is no error
    assert (
        "one verdict per DICOM series or NIfTI volume" in proc.stderr
        and f"series {scans / 'a'}:" in proc.stderr
    )
    with open(series, newline="") as f:
        assert [r["read"] for r in csv.DictReader(f)] == ["4", "3"]


def test_predict_converts_dicom_by_the_window_the_model_file_records(tmp_path):
    torch.manual_seed(0)
    model = ViT(ViTConfig(**TINY_MODEL))
    pre = {"image_size": 16, "mean": 0.4, "std": 0.2}
    other_window = [-500.0, 1000.0]
    dicom_model = tmp_path / "dicom.safetensors"
    record = {"kind": "hounsfield", "window": other_window, "slice_rule": SLICE_RULE}
    save_artifact(dicom_model, model, {**pre, "input": record})
    hu = slice_hu("lungs")
    dcm = write(ct_dataset(hu), tmp_path / "slice.dcm")
    exported = {}
    for name, lung_window in (("recorded", other_window), ("default", LUNG_WINDOW)):
        exported[name] = tmp_path / f"{name}.png"
        Image.fromarray(window(hu, *lung_window)).save(exported[name])
    predictor = load_model(dicom_model)
    assert predictor.lung_window == tuple(other_window)
    with pytest.warns(
        InputKindWarning, match=r"trained on CT in Hounsfield units .*\(-500.0, 1000.0\)"
    ):
        table = predictor.predict([dcm, exported["recorded"], exported["default"]])
    prob = table.prob_covid.tolist()
    assert prob[0] == pytest.approx(prob[1], abs=1e-7)  # as the recorded window exports it
    assert prob[0] != pytest.approx(prob[2], abs=1e-4)  # not as the default window would
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputKindWarning)  # DICOM to a DICOM model: no warning
        predictor.predict([dcm])


def test_the_input_record_names_the_kind_and_for_dicom_the_window_and_rule():
    assert input_record(["L", "RGB"]) == {"kind": "slices"}
    record = input_record(["DICOM", "DICOM"])
    assert record == {"kind": "hounsfield", "window": list(LUNG_WINDOW), "slice_rule": SLICE_RULE}
    assert input_record(["NIfTI", "DICOM"])["kind"] == "hounsfield"
    assert input_record(["DICOM", "L"])["kind"] == "mixed"


def test_two_known_patients_are_never_joined_by_likeness():
    same = np.random.default_rng(0).normal(size=(1, 32, 32)).repeat(4, axis=0)  # all alike
    assert len(set(near_duplicate_groups(same, 0.95))) == 1
    groups = near_duplicate_groups(same, 0.95, ["a", "a", "b", "b"])
    assert groups[0] == groups[1] != groups[2] == groups[3]
    # a slice without a patient (a PNG copy, say) still joins by likeness
    assert len(set(near_duplicate_groups(same[:2], 0.95, ["a", ""]))) == 1


def test_the_synthetic_series_are_patients_in_hounsfield_units_with_their_lung_range(tmp_path):
    counts = generate_series(tmp_path, n_per_class=12, seed=5, progress=False)
    per_series = LUNG_SLICES + ABOVE + BELOW
    assert counts == {"COVID": 2 * per_series, "non-COVID": 2 * per_series}
    ds = pydicom.dcmread(next((tmp_path / "COVID").rglob("IM0004.dcm")))
    assert ds.Modality == "CT" and ds.RescaleIntercept == -1024 and ds.PatientName
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu.min() < -950 and hu.max() > 0  # air, and tissue
    manifest, rejects = build_manifest(tmp_path, progress=False)
    assert len(manifest) == 4 * LUNG_SLICES and len(rejects) == 4 * (ABOVE + BELOW)
    assert (
        manifest.patient.nunique() == 4 and manifest.groupby("patient").series.nunique().eq(1).all()
    )
    again = tmp_path / "again"
    generate_series(again, n_per_class=12, seed=5, progress=False)  # deterministic
    first = sorted(p.relative_to(tmp_path) for p in (tmp_path / "COVID").rglob("*.dcm"))
    assert all((tmp_path / p).read_bytes() == (again / p).read_bytes() for p in first[:3])


# The identifying headers of the synthetic series (vitct.data.synthetic_dicom.case_headers).
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
)


def identifying_values(folder) -> set[bytes]:
    values = set()
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        values |= {str(ds.get(key)).encode() for key in IDENTIFYING if ds.get(key)}
    return values


def readable_bytes(path) -> list[bytes]:
    """The file's bytes, and each member's when it is a zip (npz caches, torch files): their
    compressed members hide text from a plain byte search."""
    import zipfile

    data = [path.read_bytes()]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            data += [archive.read(name) for name in archive.namelist()]
    return data


def found_in(blob: bytes, value: bytes) -> bool:
    """Whether `value` occurs in `blob` as itself, in UTF-8 or in UTF-32 (numpy's string
    arrays, as the caches hold paths); a date's eight digits inside a longer number (a float's
    decimals) are not the date."""
    import re

    for encoding in ("utf-8", "utf-32-le"):
        text = value.decode().encode(encoding)
        if not value.isdigit():
            if text in blob:
                return True
            continue
        digit = "[0-9.]".encode(encoding) if encoding == "utf-8" else rb"(?:[0-9.]\x00{3})"
        if re.search(rb"(?<!" + digit + rb")" + re.escape(text) + rb"(?!" + digit + rb")", blob):
            return True
    return False


@pytest.mark.slow
def test_a_dicom_run_groups_by_patient_and_writes_no_identifying_header_value(tmp_path):
    from conftest import snakemake, tiny_config

    demo = {"n_per_class": 40, "seed": 3, "format": "dicom"}
    run = snakemake(tmp_path, config=tiny_config(dataset={"source": "demo", "demo": demo}))
    images = tmp_path / "results" / "data" / "dataset" / "images"  # the input data itself
    values = identifying_values(images)
    assert len(values) > 5 * 10  # ten cases, each its own patient, study and series
    partition = pd.read_csv(tmp_path / "results" / "data" / "partition.tsv", sep="\t")
    assert partition.patient.nunique() == 10 and partition.series.nunique() == 10
    per_patient = partition.groupby("patient")
    assert per_patient.test.nunique().eq(1).all() and per_patient.fold.nunique().eq(1).all()
    assert per_patient.near_duplicate_group.nunique().eq(1).all()
    assert partition.groupby("near_duplicate_group").patient.nunique().eq(1).all()
    # the report says what the images are, and how many slices the rule left out
    summary = (tmp_path / "results" / "summary.md").read_text()
    assert summary.startswith(f"{10 * 11:,} synthetic demo DICOM files")
    report = (tmp_path / "results" / "report.html").read_text()
    assert f"{10 * 8} slices read from CT in Hounsfield units (DICOM series" in report
    assert f"({10 * 3} slices outside it left out)" in report
    model = tmp_path / "results" / "model.safetensors"
    record = load_model(model).meta["preprocessing"]["input"]
    assert record == {"kind": "hounsfield", "window": list(LUNG_WINDOW), "slice_rule": SLICE_RULE}
    predicted = vitct(
        "predict",
        str(model),
        str(images),
        "-o",
        str(tmp_path / "p.csv"),
        "--series",
        str(tmp_path / "series.csv"),
    )
    assert predicted.returncode == 0, predicted.stderr
    assert len(pd.read_csv(tmp_path / "series.csv")) == 10
    outputs = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(images)]
    assert len(outputs) > 50  # manifests, caches, models, logs, figures, report, predictions
    streams = [s.encode() for s in (run.stdout, run.stderr, predicted.stdout, predicted.stderr)]
    leaks = [
        (str(path.relative_to(tmp_path)), value.decode())
        for path in outputs
        for blob in readable_bytes(path)
        for value in values
        if found_in(blob, value)
    ]
    leaks += [("stdout/stderr", v.decode()) for b in streams for v in values if found_in(b, v)]
    assert not leaks, leaks[:10]


def write_volume(path, slices, zooms=(0.7, 0.7, 5.0)):
    """A NIfTI volume (RAS) whose axial slice k is shown as `slices[k]` (rows anterior to
    posterior, the patient's right on the left), from the feet up."""
    nibabel = pytest.importorskip("nibabel", reason="pip install -e '.[dicom]' (.ci/run does)")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([s.T[::-1, ::-1] for s in slices], axis=2).astype(np.int16)
    nibabel.save(nibabel.Nifti1Image(data, np.diag([*zooms, 1.0])), path)
    return path


def test_a_nifti_volume_is_read_as_a_series_by_the_same_window_and_rule(tmp_path, model_file):
    slices = [slice_hu(kind, seed=k) for k, kind in enumerate(KINDS)]
    volume = write_volume(tmp_path / "scans" / "chest.nii.gz", slices)
    write_volume(tmp_path / "scans" / "exported.nii", [np.clip(s + 1024, 0, 255) for s in slices])
    dcm = write(ct_dataset(slices[2]), tmp_path / "same.dcm")
    with pytest.warns(InputKindWarning):
        table = load_model(model_file).predict([tmp_path / "scans", dcm])
    rows = table[table.path.str.startswith(str(volume))]
    assert rows.path.tolist() == [f"{volume}#z{k:04d}" for k in range(len(KINDS))]
    assert (rows.left_out == "").tolist() == IN_RANGE and (rows.error == "").all()
    # its slice is the DICOM slice of the same HU, to the model
    assert rows.prob_covid.iloc[2] == pytest.approx(table.prob_covid.iloc[-1], abs=1e-7)
    (refused,) = table.error[table.path.str.endswith("exported.nii")]
    assert "not Hounsfield units" in refused
    verdicts = series_verdicts(table)
    # one verdict, the volume's (the lone DICOM slice has no SeriesInstanceUID: no series)
    assert verdicts.read.tolist() == [4] and verdicts.source.tolist() == [str(volume)]


def test_a_class_folder_of_nifti_volumes_gives_a_manifest_row_per_lung_range_slice(tmp_path):
    import shutil

    from vitct.data.images import open_grey
    from vitct.data.nifti import source_at

    def volume(seed):
        return [slice_hu(kind, seed=seed + k) for k, kind in enumerate(KINDS)]

    slices = volume(0)
    write_volume(tmp_path / "COVID" / "a" / "ct.nii.gz", slices)
    (tmp_path / "COVID" / "b").mkdir()
    shutil.copy(tmp_path / "COVID" / "a" / "ct.nii.gz", tmp_path / "COVID" / "b" / "ct.nii.gz")
    for case, seed in (("a", 100), ("b", 200)):
        write_volume(tmp_path / "non-COVID" / case / "ct.nii.gz", volume(seed))
    (tmp_path / "COVID" / "c").mkdir()
    (tmp_path / "COVID" / "c" / "broken.nii.gz").write_bytes(b"not a volume")
    manifest, rejects = build_manifest(tmp_path, progress=False)
    inside = [f"#z{k:04d}" for k, kept in enumerate(IN_RANGE) if kept]
    assert len(manifest) == 4 * len(inside) and set(manifest["mode"]) == {"NIfTI"}
    assert manifest.path.str[-6:].isin(inside).all()
    # a volume is a patient; a copy of it is the same patient (and its slices copies)
    assert manifest.patient.nunique() == 3 and manifest.sha256.nunique() == 3 * len(inside)
    copies = manifest[manifest.duplicate_of != ""]  # a copied volume's slices are copies
    assert copies.path.str.startswith("COVID/b/").all() and len(copies) == len(inside)
    (broken,) = rejects.reason[rejects.path == "COVID/c/broken.nii.gz"]
    assert "not a readable NIfTI volume" in broken
    assert rejects.reason.str.startswith("outside its series' lung range").sum() == 4 * 3
    # what preprocessing reads under a manifest path: the DICOM slice of the same HU
    grey = open_grey(source_at(tmp_path, manifest.path.iloc[0]))
    dcm = write(ct_dataset(slices[2]), tmp_path / "same.dcm")
    assert np.array_equal(np.asarray(grey), np.asarray(open_grey(dcm)))
