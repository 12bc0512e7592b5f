"""Near-duplicate groups and the nearest seen image of each test slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SPLIT_FRACTIONS

from vitct.data import load_grey
from vitct.manifest import build_manifest
from vitct.neighbours import THUMBNAIL_SIZE, near_duplicate_groups, nearest_seen
from vitct.split import assign_splits


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
        split = assign_splits(manifest, SPLIT_FRACTIONS, seed, group_column="group")
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
