"""Through the real rules: the 80-image real sample as a folder and as zips, the count warning,
the RGB/RGBA trap, and the Kaggle source with the stand-in CLI (tests/fakes/kaggle_cli.py).

The real images come from VITCT_REAL_DATA (see conftest.real_data_root); they are read in place
or zipped into tmp_path, never copied into the repository.
"""

from __future__ import annotations

import base64
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    KAGGLE_STAND_IN,
    TINY_IMAGES,
    put_kaggle_stand_in_on_path,
    real_data_root,
    snakemake,
    tiny_config,
)
from PIL import Image

from vitct.data.cache import load_cache
from vitct.data.classes import CLASS_DIRS
from vitct.data.images import load_grey

CACHE = TINY_IMAGES
RECEIPT = "results/data/dataset/source.json"
FETCH_LOG = "results/logs/fetch_data/dataset.log"
STAND_IN = KAGGLE_STAND_IN
SLUG = "plameneduardo/sarscov2-ctscan-dataset"
KEY = "k3y-that-must-never-be-printed-0123456789"


def sample() -> Path:
    return real_data_root() / "sarscov2-ct-sample"


def local_config(path: Path, **dataset) -> dict:
    return tiny_config(dataset={"source": "local", "path": str(path), **dataset})


def receipt(workdir: Path) -> dict:
    return json.loads((workdir / RECEIPT).read_text())


def sample_zip(path: Path, prefix: str = "") -> Path:
    """The sample zipped the way users do: class folders at the top or under a folder of its
    own; with a folder, a macOS shadow tree (__MACOSX/) comes along, as Finder adds one."""
    with zipfile.ZipFile(path, "w") as zf:
        for image in sorted(sample().glob("*/*.png")):
            arcname = f"{image.parent.name}/{image.name}"
            zf.write(image, prefix + arcname)
            if prefix:
                zf.writestr(f"__MACOSX/{prefix}{image.parent.name}/._{image.name}", b"\0\5\26\7")
    return path


# --- the real sample through fetch_data .. preprocess ------------------------------------


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """The sample folder, read in place, up to the preprocessed cache."""
    source = sample()
    workdir = tmp_path_factory.mktemp("sample_folder")
    snakemake(workdir, CACHE, config=local_config(source))
    return workdir


@pytest.mark.slow
@pytest.mark.real_data
def test_sample_folder(folder_run):
    info = receipt(folder_run)
    assert info["real_data"] and info["source"] == "local"
    assert info["root"] == str(sample().resolve())
    assert info["counts"] == {"COVID": 40, "non-COVID": 40}
    manifest = (
        (folder_run / "results" / "data" / "dataset" / "manifest.tsv").read_text().splitlines()
    )
    assert len(manifest) == 1 + 80  # header and every image: none rejected
    cache = load_cache(folder_run / CACHE)
    assert any(a.shape == (80, 32, 32) and a.dtype == np.uint8 for a in cache.values())


@pytest.mark.slow
@pytest.mark.real_data
def test_sample_counts_warn_with_the_numbers(folder_run):
    log = (folder_run / FETCH_LOG).read_text()
    assert (
        "WARNING per-class counts {'COVID': 40, 'non-COVID': 40} differ from what Kaggle "
        "serves {'COVID': 1252, 'non-COVID': 1229}" in log
    )


@pytest.mark.slow
@pytest.mark.real_data
def test_no_count_warning_when_the_counts_match(tmp_path):
    expected = {"COVID": 40, "non-COVID": 40}
    snakemake(tmp_path, RECEIPT, config=local_config(sample(), expected_counts=expected))
    log = (tmp_path / FETCH_LOG).read_text()
    assert "{'COVID': 40, 'non-COVID': 40}" in log and "WARNING" not in log


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("prefix", ["", "sarscov2-ctscan-dataset/"], ids=["flat", "nested"])
def test_sample_zip_gives_the_same_model_input(prefix, folder_run, tmp_path):
    archive = sample_zip(tmp_path / "sample.zip", prefix)
    workdir = tmp_path / "run"
    snakemake(workdir, CACHE, config=local_config(archive))
    extracted = workdir / "results" / "data" / "dataset" / "extracted"
    assert (workdir / receipt(workdir)["root"]).resolve() == (extracted / prefix).resolve()
    assert receipt(workdir)["counts"] == {"COVID": 40, "non-COVID": 40}
    zipped, folder = load_cache(workdir / CACHE), load_cache(folder_run / CACHE)
    assert zipped.keys() == folder.keys()
    for key in folder:
        assert np.array_equal(zipped[key], folder[key]), key


# --- the RGB/RGBA trap: the file format must not reach the model ------------------------


@pytest.mark.real_data
@pytest.mark.parametrize("class_dir", CLASS_DIRS)
@pytest.mark.parametrize("size", [32, 224])
def test_rgb_and_rgba_copies_give_identical_input(class_dir, size, tmp_path):
    # The first scan of each class: an RGB one in COVID, an RGBA one in non-COVID.
    original = sorted((sample() / class_dir).glob("*.png"))[0]
    with Image.open(original) as img:
        img.load()
    if img.mode == "RGBA":
        assert img.getchannel("A").getextrema() == (255, 255)  # opaque, as the README says
    copies = {}
    for mode in ("RGB", "RGBA"):
        copy = img.convert(mode)
        assert copy.mode == mode and (mode == "RGB" or copy.getchannel("A").getextrema()[0] == 255)
        buf = io.BytesIO()
        copy.save(buf, "PNG")
        buf.seek(0)
        copies[mode] = load_grey(buf, size)
    assert copies["RGB"].shape == (size, size) and copies["RGB"].dtype == np.uint8
    assert np.array_equal(copies["RGB"], copies["RGBA"])
    assert np.array_equal(copies["RGB"], load_grey(original, size))


# --- the Kaggle source through fetch_data, with the stand-in CLI -------------------------


@pytest.fixture
def kaggle_stand_in(tmp_path, monkeypatch) -> Path:
    """The stand-in first on PATH as `kaggle`, no credentials anywhere (own HOME), serving a
    small zip in the Kaggle layout; FAKE_KAGGLE picks the outcome. Returns the workdir."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in list(os.environ):
        if var.startswith("KAGGLE_") or var in ("VERBOSE", "VERBOSE_OUTPUT", "XDG_CONFIG_HOME"):
            monkeypatch.delenv(var)
    put_kaggle_stand_in_on_path(tmp_path, monkeypatch)
    served = tmp_path / "served.zip"
    with zipfile.ZipFile(served, "w") as zf:
        for c in CLASS_DIRS:
            for i in range(3):
                buf = io.BytesIO()
                Image.new("L", (16, 16), 60 * i).save(buf, "PNG")
                zf.writestr(f"{c}/{c} ({i}).png", buf.getvalue())
        zf.writestr("COVID/.DS_Store", b"\0\0\0\1Bud1")  # a Mac's folder metadata: not an image
    monkeypatch.setenv("FAKE_KAGGLE_ZIP", str(served))
    monkeypatch.setenv("FAKE_KAGGLE", "ok")
    return tmp_path / "run"


def kaggle_fetch(workdir: Path, check: bool = True):
    return snakemake(
        workdir, RECEIPT, config=tiny_config(dataset={"source": "kaggle"}), check=check
    )


@pytest.mark.slow
def test_kaggle_source(kaggle_stand_in):
    kaggle_fetch(kaggle_stand_in)
    info = receipt(kaggle_stand_in)
    data = kaggle_stand_in / "results" / "data" / "dataset"
    assert info["source"] == "kaggle" and info["real_data"]
    assert info["origin"] == f"Kaggle dataset {SLUG}"
    assert (kaggle_stand_in / info["root"]).resolve() == (data / "extracted").resolve()
    assert info["counts"] == {"COVID": 3, "non-COVID": 3}
    assert sorted(p.name for p in data.iterdir()) == ["extracted", "source.json"]  # no zip kept


KAGGLE_FAILURES = {
    "no credentials": ("auth", {}, "Kaggle asks for credentials and none are set"),
    "rejected credentials": (
        "auth",
        {"KAGGLE_USERNAME": "someone", "KAGGLE_KEY": KEY},
        "Kaggle rejected the credentials",
    ),
    "no network": ("offline", {}, "Kaggle cannot be reached (no network"),
    "no such dataset": ("missing", {}, f"Kaggle has no dataset '{SLUG}'"),
    "cut zip": ("cut", {}, "is not a readable zip"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", KAGGLE_FAILURES)
def test_kaggle_source_failures(case, kaggle_stand_in, monkeypatch):
    mode, env, message = KAGGLE_FAILURES[case]
    monkeypatch.setenv("FAKE_KAGGLE", mode)
    monkeypatch.setenv("VERBOSE", "1")  # makes the real CLI dump its credentials
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    proc = kaggle_fetch(kaggle_stand_in, check=False)
    console = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "vitct: rule 'fetch_data' failed: UserError: " in console
    assert message in console
    assert not (kaggle_stand_in / RECEIPT).exists()
    data = kaggle_stand_in / "results" / "data" / "dataset"
    assert not data.exists() or list(data.iterdir()) == []  # nothing partial left behind
    log = (kaggle_stand_in / FETCH_LOG).read_text()
    assert message in log
    basic = base64.b64encode(f"someone:{KEY}".encode()).decode()
    for text in (console, log):
        assert KEY not in text and basic not in text
