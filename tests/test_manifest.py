"""Bad image files and bad data folders: each a clear outcome, nothing computed before lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_IMAGES, snakemake, tiny_config
from PIL import Image

from vitct.data import load_grey, load_splits, save_cache
from vitct.manifest import DataLayoutError, build_manifest
from vitct.split import assign_splits
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


def test_exact_duplicates_never_straddle_splits():
    rows = [{"path": f"{i}.png", "label": i // 4 % 2, "sha256": f"h{i // 4}"} for i in range(200)]
    manifest = pd.DataFrame(rows)
    for seed in range(5):
        split = assign_splits(manifest, {"train": 0.6, "val": 0.2, "test": 0.2}, seed)
        assert (manifest.assign(split=split).groupby("sha256").split.nunique() == 1).all()


def test_split_is_stratified_seeded_and_close_to_the_fractions():
    manifest = pd.DataFrame(
        {
            "path": [f"{i}" for i in range(1000)],
            "label": [i % 2 for i in range(1000)],
            "sha256": [f"h{i}" for i in range(1000)],
        }
    )
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    a = assign_splits(manifest, fractions, 1)
    assert a.equals(assign_splits(manifest, fractions, 1))
    assert not a.equals(assign_splits(manifest, fractions, 2))
    counts = pd.crosstab(a, manifest.label)
    assert (counts.loc["train"] == 350).all() and (counts.loc["test"] == 75).all()


def test_grey_input_is_identical_whatever_the_colour_mode(tmp_path: Path):
    rng = np.random.default_rng(0)
    grey = Image.fromarray(rng.integers(0, 255, (60, 80), dtype=np.uint8))
    for mode in ("L", "RGB", "RGBA", "LA"):
        grey.convert(mode).save(tmp_path / f"{mode}.png")
    arrays = [load_grey(tmp_path / f"{m}.png", 32) for m in ("L", "RGB", "RGBA", "LA")]
    for a in arrays[1:]:
        np.testing.assert_array_equal(a, arrays[0])


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


def test_splits_come_from_the_table_and_a_stale_cache_is_named(tmp_path: Path):
    images = np.arange(4 * 2 * 2, dtype=np.uint8).reshape(4, 2, 2)
    cache = {"x": images, "y": np.array([0, 1, 0, 1]), "paths": np.array(["a", "b", "c", "d"])}
    save_cache(tmp_path / "images.npz", cache)
    table = pd.DataFrame({"path": ["d", "a", "b", "c"], "split": ["train", "train", "val", "test"]})
    table.to_csv(tmp_path / "split.tsv", sep="\t", index=False)
    splits = load_splits(tmp_path / "images.npz", tmp_path / "split.tsv")
    assert list(splits["train_paths"]) == ["d", "a"]  # in the table's order
    np.testing.assert_array_equal(splits["train_x"], images[[3, 0]])
    assert list(splits["test_y"]) == [0]
    # A cache already loaded gives the same; a cache from another manifest says what to do.
    assert list(load_splits(cache, tmp_path / "split.tsv")["val_paths"]) == ["b"]
    table.loc[3, "path"] = "e"
    table.to_csv(tmp_path / "split.tsv", sep="\t", index=False)
    with pytest.raises(
        ValueError, match=r"images\.npz has no row for 1 of the images \(e\.g\. e\)"
    ):
        load_splits(tmp_path / "images.npz", tmp_path / "split.tsv")
