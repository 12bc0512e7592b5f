"""Near-duplicate slices: groups of slices that are, in effect, the same image, and the most
similar seen slice of each scored one."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import reencoded, shifted
from PIL import Image

from vitct.data.duplicates import (
    THUMBNAIL_SIZE,
    embed,
    group_statistics,
    near_duplicate_groups,
    nearest_train,
)
from vitct.data.images import load_grey
from vitct.data.manifest import build_manifest
from vitct.data.partition import locked_test
from vitct.data.synthetic import make_slice

THRESHOLD = 0.95


def as_thumbnail(vector: np.ndarray) -> np.ndarray:
    """A zero-mean vector as a 32x32 uint8 thumbnail (an affine map, which the embedding undoes
    up to rounding)."""
    v = vector / vector.std()
    return np.clip(np.round(128 + 30 * v), 0, 255).astype(np.uint8).reshape(32, 32)


def chain() -> np.ndarray:
    """Thumbnails a, b, c with a~b and b~c above the threshold, a~c below it, then three
    unrelated ones."""
    rng = np.random.default_rng(0)
    u, w = rng.normal(size=(2, THUMBNAIL_SIZE**2))
    u -= u.mean()
    w -= w.mean()
    w -= (w @ u) / (u @ u) * u  # orthogonal to u
    u, w = u / np.linalg.norm(u), w / np.linalg.norm(w)
    c = 0.9 * u + np.sqrt(1 - 0.9**2) * w  # cos(a, c) = 0.9
    b = (u + c) / np.linalg.norm(u + c)  # halfway: cos 0.975 to both
    others = rng.normal(size=(3, THUMBNAIL_SIZE**2))
    return np.stack([as_thumbnail(v - v.mean()) for v in (u, b, c, *others)])


def test_a_chain_of_near_duplicates_is_one_group():
    thumbnails = chain()
    e = embed(thumbnails)
    assert e[0] @ e[1] >= THRESHOLD and e[1] @ e[2] >= THRESHOLD
    assert e[0] @ e[2] < THRESHOLD  # a and c only meet through b
    groups = near_duplicate_groups(thumbnails, THRESHOLD)
    assert groups[0] == groups[1] == groups[2]
    assert len(set(groups)) == 4


def test_without_the_middle_slice_the_chain_falls_apart():
    thumbnails = chain()[[0, 2]]
    groups = near_duplicate_groups(thumbnails, THRESHOLD)
    assert groups[0] != groups[1]


def test_groups_do_not_depend_on_the_block_size():
    thumbnails = chain()
    np.testing.assert_array_equal(
        near_duplicate_groups(thumbnails, THRESHOLD, block=2),
        near_duplicate_groups(thumbnails, THRESHOLD),
    )


def thumbnail_of(img: Image.Image) -> np.ndarray:
    """The thumbnail the pipeline takes of an image file (here, PNG bytes)."""
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    buffer.seek(0)
    return load_grey(buffer, THUMBNAIL_SIZE)


def test_shifted_and_reencoded_copies_join_their_original_and_distinct_slices_do_not():
    rng = np.random.default_rng(0)
    slices = [make_slice(rng, covid=k % 2 == 0) for k in range(6)]
    copies = [shifted(slices[0], 3, -2), reencoded(slices[0]), shifted(slices[1], -2, 3)]
    groups = near_duplicate_groups(np.stack([thumbnail_of(i) for i in slices + copies]), THRESHOLD)
    assert groups[6] == groups[7] == groups[0]
    assert groups[8] == groups[1]
    assert len(set(groups[:6])) == 6  # the synthetic slices differ from one another


def test_a_blank_thumbnail_embeds_as_zeros_not_nan():
    thumbnails = np.stack([np.full((32, 32), 77, np.uint8), chain()[0]])
    e = embed(thumbnails)
    assert np.isfinite(e).all() and not e[0].any()
    assert np.linalg.norm(e[1]) == pytest.approx(1.0, abs=1e-5)
    assert len(set(near_duplicate_groups(thumbnails, THRESHOLD))) == 2


def test_nearest_train_finds_the_most_similar_seen_slice_and_its_cosine():
    rng = np.random.default_rng(1)
    seen = rng.integers(0, 256, (4, 8, 8), dtype=np.uint8)
    noisy = np.clip(seen[3].astype(int) + rng.integers(-3, 4, (8, 8)), 0, 255)
    scored = np.stack([seen[2], 255 - seen[0], noisy.astype(np.uint8)])
    index, cosine = nearest_train(seen, scored)
    assert index[0] == 2 and cosine[0] == pytest.approx(1.0, abs=1e-5)
    assert cosine[1] < 0.5  # an inverted slice is no near-copy of anything
    assert index[2] == 3 and 0.95 < cosine[2] < 1.0


def test_group_statistics_count_groups_singletons_and_the_largest():
    stats = group_statistics(np.array([4, 4, 1, 9, 9, 9, 7]))
    assert stats == {
        "images": 7,
        "groups": 4,
        "singletons": 2,
        "images_in_groups_of_2_or_more": 5,
        "largest_group": 3,
    }
    assert group_statistics(np.array([], dtype=int))["largest_group"] == 0


@pytest.mark.real_data
def test_real_copies_share_a_group_and_a_side_of_the_locked_test(data_with_copies: Path):
    root = data_with_copies
    manifest, rejects = build_manifest(root, progress=False)
    assert rejects.empty
    thumbs = np.stack([load_grey(root / p, THUMBNAIL_SIZE) for p in manifest.path])
    manifest["near_duplicate_group"] = near_duplicate_groups(thumbs, threshold=THRESHOLD)
    group = manifest.set_index("path").near_duplicate_group
    pairs = [
        ("COVID/Covid (128).png", "COVID/Covid (129).png"),
        ("COVID/Covid (134).png", "COVID/Covid (135).png"),
    ]
    for k, original in enumerate(sorted((root / "non-COVID").glob("Non-Covid*.png"))[:5]):
        name = f"non-COVID/{original.name}"
        pairs += [(name, f"non-COVID/shifted {k}.png"), (name, f"non-COVID/reencoded {k}.png")]
    for a, b in pairs:
        assert group[a] == group[b], (a, b)
    for seed in range(5):
        test = locked_test(manifest, 0.2, seed, "grouped")
        side = dict(zip(manifest.path, test, strict=True))
        for a, b in pairs:
            assert side[a] == side[b], (seed, a, b)
