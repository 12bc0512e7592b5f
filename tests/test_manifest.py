"""Bad image files and bad data folders: every file is a manifest row or a rejects row with its
reason, odd names and extra folders are handled, and nothing computed before is lost."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_IMAGES, snakemake, tiny_config
from PIL import Image

from vitct.data import MIN_IMAGE_SIDE
from vitct.manifest import DataLayoutError, build_manifest
from vitct.synthetic import generate


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    generate(root, 12, seed=5, progress=False)
    return root


def with_bad_files(clean: Path, dest: Path) -> Path:
    shutil.copytree(clean, dest)
    good = dest / "COVID" / "Covid (1).png"
    data = good.read_bytes()
    (dest / "COVID" / "truncated.png").write_bytes(data[: len(data) // 2])  # corrupt PNG
    (dest / "COVID" / "empty.png").write_bytes(b"")  # zero-byte file
    (dest / "non-COVID" / "notes.txt").write_text("not an image")  # non-image file
    shutil.copy(good, dest / "COVID" / "copy of 1.png")  # exact duplicate
    return dest


def test_bad_files_go_to_rejects_with_their_reason(clean_folder: Path, tmp_path: Path):
    root = with_bad_files(clean_folder, tmp_path / "data")
    manifest, rejects = build_manifest(root, progress=False)
    reasons = dict(zip(rejects.path, rejects.reason, strict=True))
    assert reasons["COVID/empty.png"] == "empty file (0 bytes)"
    assert reasons["COVID/truncated.png"].startswith("cannot decode")
    assert reasons["non-COVID/notes.txt"].startswith("not an image")
    assert len(manifest) == 25 and len(rejects) == 3  # nothing silently dropped
    dup = manifest.set_index("path").loc["COVID/copy of 1.png", "duplicate_of"]
    assert dup == "COVID/Covid (1).png"


def test_same_image_under_both_labels_is_rejected(clean_folder: Path, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(clean_folder, root)
    shutil.copy(root / "COVID" / "Covid (2).png", root / "non-COVID" / "mislabelled.png")
    manifest, rejects = build_manifest(root, progress=False)
    assert set(rejects.path) == {"COVID/Covid (2).png", "non-COVID/mislabelled.png"}
    assert "both class folders" in rejects.reason.iloc[0]
    assert len(manifest) == 23


@pytest.mark.parametrize("problem", ["missing", "empty", "only bad files"])
def test_missing_or_empty_class_folder_is_a_clear_error(problem, clean_folder, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(clean_folder, root)
    shutil.rmtree(root / "non-COVID")
    if problem != "missing":
        (root / "non-COVID").mkdir()
    if problem == "only bad files":
        (root / "non-COVID" / "x.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataLayoutError, match="non-COVID"):
        build_manifest(root, progress=False)


@pytest.mark.slow
def test_pipeline_keeps_going_past_bad_files(clean_folder: Path, tmp_path: Path):
    root = with_bad_files(clean_folder, tmp_path / "data")
    config = tiny_config(dataset={"source": "local", "path": str(root)})
    snakemake(tmp_path / "run", TINY_IMAGES, config=config)
    rejects = pd.read_csv(tmp_path / "run/results/data/rejects.tsv", sep="\t")
    assert len(rejects) == 3
    log = (tmp_path / "run/results/logs/build_manifest.log").read_text()
    assert "rejected COVID/truncated.png: cannot decode" in log


@pytest.mark.slow
def test_empty_class_folder_fails_clearly_and_keeps_earlier_results(clean_folder, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(clean_folder, root)
    workdir = tmp_path / "run"
    config = tiny_config(dataset={"source": "local", "path": str(root)})
    snakemake(workdir, "results/data/split.tsv", config=config)
    split_before = (workdir / "results/data/split.tsv").read_bytes()
    for f in (root / "non-COVID").iterdir():
        f.unlink()
    proc = snakemake(workdir, "results/data/split.tsv", config=config, check=False)
    assert proc.returncode != 0
    console = proc.stdout + proc.stderr
    assert "class folder" in console and "non-COVID" in console and "is empty" in console
    assert "Traceback" not in console
    # The receipt of the failed fetch is gone, so nothing downstream takes the data as complete;
    # what was computed before (the split of the earlier data) is still there.
    assert (workdir / "results/data/split.tsv").read_bytes() == split_before


def reasons(root: Path) -> dict[str, str]:
    manifest, rejects = build_manifest(root, progress=False)
    assert not set(manifest.path) & set(rejects.path)
    return dict(zip(rejects.path, rejects.reason, strict=True))


def test_a_broken_link_gets_a_rejects_row(folder):
    (folder / "COVID" / "gone.png").symlink_to(folder / "nowhere.png")
    (folder / "COVID" / "alias.png").symlink_to(folder / "COVID" / "Covid (1).png")
    manifest, rejects = build_manifest(folder, progress=False)
    assert rejects.path.tolist() == ["COVID/gone.png"]
    assert rejects.reason[0].startswith("broken link: its target")
    assert "COVID/alias.png" in set(manifest.path)  # a working link is an image like any


def test_images_outside_the_size_policy_are_rejected_with_the_reason(folder, monkeypatch):
    Image.new("L", (1, 1), 128).save(folder / "COVID" / "dot.png")
    Image.new("L", (MIN_IMAGE_SIDE - 1, 200), 128).save(folder / "non-COVID" / "sliver.png")
    Image.new("L", (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE), 128).save(folder / "COVID" / "small.png")
    # Over the limit by a little, below PIL's own default (89 Mpx) that once let 144 Mpx in:
    # the limit is lowered here so that the test image stays small.
    monkeypatch.setattr("vitct.data.MAX_IMAGE_PIXELS", 300 * 300)
    Image.new("L", (301, 300), 128).save(folder / "non-COVID" / "huge.png")
    found = reasons(folder)
    assert found["COVID/dot.png"] == "image too small: 1x1 pixels, under 16 on a side (no CT slice)"
    assert found["non-COVID/sliver.png"].startswith("image too small: 15x200 pixels")
    assert found["non-COVID/huge.png"].startswith("image too large: 301x300 pixels is over")
    assert "COVID/small.png" not in found


def test_a_floating_point_image_is_refused_not_stretched(folder):
    Image.fromarray(np.full((40, 40), 0.5, np.float32)).save(folder / "COVID" / "float.tif")
    assert reasons(folder)["COVID/float.tif"].startswith("floating-point image (mode F)")


def test_an_extra_class_folder_is_named_in_a_warning_and_its_files_rejected(folder, caplog):
    (folder / "Pneumonia" / "scan 2").mkdir(parents=True)
    shutil.copy(folder / "COVID" / "Covid (1).png", folder / "Pneumonia" / "p.png")
    shutil.copy(folder / "COVID" / "Covid (2).png", folder / "Pneumonia" / "scan 2" / "q.png")
    (folder / ".cache").mkdir()  # hidden: no warning
    with caplog.at_level(logging.WARNING, logger="vitct.manifest"):
        manifest, rejects = build_manifest(folder, progress=False)
    assert [r.getMessage() for r in caplog.records] == [
        f"not used: folder(s) Pneumonia/ in {folder}; only COVID/ and non-COVID/ are classes, "
        "so their files are left out"
    ]
    assert rejects.path.tolist() == ["Pneumonia/p.png", "Pneumonia/scan 2/q.png"]
    assert set(rejects.reason) == {
        "not in a class folder: Pneumonia/ is no class of this model (only COVID/ and "
        "non-COVID/ are)"
    }
    assert len(manifest) == 12  # the class folders' images, all of them
