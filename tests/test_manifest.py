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
from odd_images import NOT_A_SLICE, frames, not_a_slice, sideways, slice_pixels, transparent
from PIL import Image

from vitct.data.images import MIN_IMAGE_SIDE
from vitct.data.manifest import DataLayoutError, build_manifest
from vitct.data.synthetic import generate


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
    rejects = pd.read_csv(tmp_path / "run/results/data/dataset/rejects.tsv", sep="\t")
    assert len(rejects) == 3
    log = (tmp_path / "run/results/logs/build_manifest/dataset.log").read_text()
    assert "rejected COVID/truncated.png: cannot decode" in log


@pytest.mark.slow
def test_empty_class_folder_fails_clearly_and_keeps_earlier_results(clean_folder, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(clean_folder, root)
    workdir = tmp_path / "run"
    config = tiny_config(dataset={"source": "local", "path": str(root)})
    snakemake(workdir, "results/data/partition.tsv", config=config)
    partition_before = (workdir / "results/data/partition.tsv").read_bytes()
    for f in (root / "non-COVID").iterdir():
        f.unlink()
    proc = snakemake(workdir, "results/data/partition.tsv", config=config, check=False)
    assert proc.returncode != 0
    console = proc.stdout + proc.stderr
    assert "class folder" in console and "non-COVID" in console and "is empty" in console
    assert "Traceback" not in console
    # The receipt of the failed fetch is gone, so nothing downstream takes the data as complete;
    # what was computed before (the partition of the earlier data) is still there.
    assert (workdir / "results/data/partition.tsv").read_bytes() == partition_before


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
    small = slice_pixels((MIN_IMAGE_SIDE, MIN_IMAGE_SIDE))  # not blank: the size is on trial
    Image.fromarray(small).save(folder / "COVID" / "small.png")
    # Over the limit by a little, below PIL's own default (89 Mpx) that once let 144 Mpx in:
    # the limit is lowered here so that the test image stays small.
    monkeypatch.setattr("vitct.data.images.MAX_IMAGE_PIXELS", 300 * 300)
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
    with caplog.at_level(logging.WARNING, logger="vitct.data.manifest"):
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


def test_hidden_files_get_a_rejects_row_and_stay_out_of_the_data(folder):
    slice_png = folder / "COVID" / "Covid (1).png"
    shutil.copy(slice_png, folder / "COVID" / ".hidden_slice.png")
    (folder / "COVID" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # a Mac's folder metadata
    (folder / "non-COVID" / "._Non-Covid (1).png").write_bytes(b"\0\5\26\7")  # macOS ._ copy
    (folder / "COVID" / ".ipynb_checkpoints").mkdir()
    shutil.copy(slice_png, folder / "COVID" / ".ipynb_checkpoints" / "slice-checkpoint.png")
    (folder / "Pneumonia").mkdir()
    shutil.copy(slice_png, folder / "Pneumonia" / ".p.png")
    manifest, rejects = build_manifest(folder, progress=False)
    found = dict(zip(rejects.path, rejects.reason, strict=True))
    hidden = [
        "COVID/.hidden_slice.png",
        "COVID/.DS_Store",
        "non-COVID/._Non-Covid (1).png",
        "COVID/.ipynb_checkpoints/slice-checkpoint.png",
        "Pneumonia/.p.png",
    ]
    assert sorted(found) == sorted(hidden)  # every file: a manifest row or a rejects row
    for path in hidden:
        assert found[path].startswith("hidden file: "), found[path]
        assert "without the leading dot to use it" in found[path]
    assert found["COVID/.hidden_slice.png"] == (
        "hidden file: its name starts with a dot, as system files do (.DS_Store, a macOS ._ "
        "copy); rename it without the leading dot to use it"
    )
    assert len(manifest) == 12 and not manifest.path.str.contains("/[.]").any()


def test_content_that_is_no_ct_slice_goes_to_the_rejects_with_what_was_found(folder):
    names = {}
    for k, kind in enumerate(NOT_A_SLICE):
        names[kind] = f"{('COVID', 'non-COVID')[k % 2]}/{kind}.png"
        not_a_slice(kind).save(folder / names[kind])
    manifest, rejects = build_manifest(folder, progress=False)
    found = dict(zip(rejects.path, rejects.reason, strict=True))
    assert sorted(found) == sorted(names.values())
    for kind, path in names.items():
        assert found[path].startswith(NOT_A_SLICE[kind]), found[path]
    assert found["COVID/all black.png"] == (
        "blank or near-constant image: its grey levels vary by SD 0.0, under 5, around level 0 "
        "of 255: no CT slice is so even; check the export (a 12-bit slice saved at 16 bits "
        "reads near black: export it at 8 bits) or leave the file out"
    )
    assert "export the grey slice alone" in found[names["colour noise"]]
    assert "crop" in found[names["strip"]]
    assert len(manifest) == 12  # the synthetic slices, grey in L, RGB and RGBA files, all pass
    assert set(manifest["mode"]) == {"L", "RGB", "RGBA"}


def test_transparent_and_multi_frame_files_in_the_manifest(folder, caplog):
    transparent(folder / "COVID" / "mostly.png", 0.6)
    transparent(folder / "COVID" / "part.png", 0.2)
    frames(folder / "non-COVID" / "stack.tif", 2)
    frames(folder / "non-COVID" / "anim.gif", 3)
    with caplog.at_level(logging.WARNING, logger="vitct.data.manifest"):
        manifest, rejects = build_manifest(folder, progress=False)
    found = dict(zip(rejects.path, rejects.reason, strict=True))
    assert sorted(found) == ["COVID/mostly.png", "non-COVID/anim.gif", "non-COVID/stack.tif"]
    assert found["COVID/mostly.png"].startswith("mostly transparent (60% of pixels): ")
    assert found["non-COVID/stack.tif"].startswith("2 frames (")
    assert found["non-COVID/anim.gif"].startswith("3 frames (")
    # Partly transparent: used, composited onto black, and said in the log.
    assert manifest.set_index("path").loc["COVID/part.png", "mode"] == "RGBA"
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("COVID/part.png: partly transparent (20% of pixels") for m in messages)


def test_the_manifest_gives_the_size_a_viewer_shows(folder):
    sideways(folder / "COVID" / "sideways.jpg", slice_pixels(), quality=95)
    manifest, _ = build_manifest(folder, progress=False)
    row = manifest.set_index("path").loc["COVID/sideways.jpg"]
    assert (row.width, row.height) == (64, 48)  # upright; stored as 48x64
