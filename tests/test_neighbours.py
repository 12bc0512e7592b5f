"""The grouped split never puts near-duplicate slices on different sides."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import real_data_root
from PIL import Image

from vitct.data import load_grey
from vitct.folds import TEST_FOLD, assign_folds
from vitct.manifest import build_manifest
from vitct.neighbours import THUMBNAIL_SIZE, near_duplicate_groups, nearest_seen
from vitct.split import assign_splits

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def shifted(img: Image.Image, dx: int, dy: int) -> Image.Image:
    """The same slice moved by a few pixels (edge pixels repeated)."""
    a = np.asarray(img.convert("L"))
    return Image.fromarray(np.roll(a, (dy, dx), axis=(0, 1)))


def reencoded(img: Image.Image) -> Image.Image:
    """The same slice through lossy JPEG and back, as RGB."""
    buffer = io.BytesIO()
    img.convert("RGB").save(buffer, "JPEG", quality=80)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


@pytest.fixture(scope="module")
def data_with_copies(tmp_path_factory) -> Path:
    """The 80-image real sample, the dataset's two exact duplicate pairs, and for five scans a
    shifted and a re-encoded copy."""
    real = real_data_root()
    root = tmp_path_factory.mktemp("grouped")
    shutil.copytree(real / "sarscov2-ct-sample", root, dirs_exist_ok=True)
    for n in (128, 129, 134, 135):  # (128)=(129) and (134)=(135) byte for byte
        shutil.copy(real / f"sarscov2-ct/COVID/Covid ({n}).png", root / "COVID")
    for k, path in enumerate(sorted((root / "non-COVID").glob("*.png"))[:5]):
        with Image.open(path) as img:
            shifted(img, 3, -2).save(path.with_name(f"shifted {k}.png"))
            reencoded(img).save(path.with_name(f"reencoded {k}.png"))
    return root


@pytest.mark.real_data
def test_copies_land_in_the_same_group_and_split(data_with_copies: Path):
    root = data_with_copies
    manifest, rejects = build_manifest(root, progress=False)
    assert rejects.empty
    thumbs = np.stack([load_grey(root / p, THUMBNAIL_SIZE) for p in manifest.path])
    manifest["group"] = near_duplicate_groups(thumbs, threshold=0.95)
    group = manifest.set_index("path").group
    originals = sorted((root / "non-COVID").glob("Non-Covid*.png"))[:5]
    pairs = [
        ("COVID/Covid (128).png", "COVID/Covid (129).png"),
        ("COVID/Covid (134).png", "COVID/Covid (135).png"),
    ]
    for k, original in enumerate(originals):
        name = f"non-COVID/{original.name}"
        pairs += [(name, f"non-COVID/shifted {k}.png"), (name, f"non-COVID/reencoded {k}.png")]
    for a, b in pairs:
        assert group[a] == group[b], (a, b)
    for seed in range(10):
        split = assign_splits(manifest, FRACTIONS, seed, group_column="group")
        side = dict(zip(manifest.path, split, strict=True))
        for a, b in pairs:
            assert side[a] == side[b], (seed, a, b)


def test_chains_of_near_duplicates_form_one_group():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(32, 32))
    drift = [base + 0.25 * k * rng.normal(size=(32, 32)) / 4 for k in range(4)]  # a slow drift
    unrelated = rng.normal(size=(3, 32, 32))
    thumbs = np.stack([*drift, *unrelated])
    thumbs = ((thumbs - thumbs.min()) / np.ptp(thumbs) * 255).astype(np.uint8)
    groups = near_duplicate_groups(thumbs, threshold=0.95)
    assert len(set(groups[:4])) == 1
    assert len(set(groups[4:])) == 3 and not set(groups[4:]) & {groups[0]}


def test_nearest_seen_names_each_test_images_closest_seen_image():
    rng = np.random.default_rng(1)
    seen = rng.integers(0, 256, size=(3, 8, 8), dtype=np.uint8)
    test = np.stack([seen[2], 255 - seen[0]])  # a copy of seen image 2, an inverted one
    paths = np.array(["s0", "s1", "s2", "t0", "t1"])
    cache = {"thumbnails": np.concatenate([seen, test]), "paths": paths}
    table = pd.DataFrame({"path": paths, "split": ["train", "val", "train", "test", "test"]})
    found = nearest_seen(cache, table, "split")
    assert list(found.seen) == [0, 1, 2] and list(found.test) == [3, 4]
    assert found.nearest[0] == 2 and found.similarity[0] == pytest.approx(1.0)
    assert found.similarity[1] < 0.5


def test_grouped_split_keeps_stratification_roughly():
    rows = [{"path": str(i), "label": i % 2, "group": i // 3} for i in range(600)]
    manifest = pd.DataFrame(rows)
    manifest["label"] = manifest.group % 2  # groups share a label
    split = assign_splits(manifest, FRACTIONS, 0, group_column="group")
    counts = pd.crosstab(split, manifest.label)
    assert (abs(counts.loc["train"] - 180) <= 3).all()


@pytest.mark.real_data
def test_folds_keep_copies_together_and_never_touch_the_test_split(data_with_copies: Path):
    root = data_with_copies
    manifest, _ = build_manifest(root, progress=False)
    thumbs = np.stack([load_grey(root / p, THUMBNAIL_SIZE) for p in manifest.path])
    manifest["near_duplicate_group"] = near_duplicate_groups(thumbs, threshold=0.95)
    manifest["split"] = assign_splits(manifest, FRACTIONS, 0, "near_duplicate_group")
    fold = dict(zip(manifest.path, assign_folds(manifest, 3, seed=0), strict=True))
    copies = [("COVID/Covid (128).png", "COVID/Covid (129).png")]
    original = f"non-COVID/{sorted((root / 'non-COVID').glob('Non-Covid*.png'))[0].name}"
    copies += [(original, "non-COVID/shifted 0.png"), (original, "non-COVID/reencoded 0.png")]
    for a, b in copies:
        assert fold[a] == fold[b], (a, b)
    for path, split in zip(manifest.path, manifest.split, strict=True):
        assert (fold[path] == TEST_FOLD) == (split == "test"), path
