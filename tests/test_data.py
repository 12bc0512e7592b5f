"""The model's input from an image file and the splits read from the cache and the split table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vitct.data import load_grey, load_splits, save_cache


def test_a_16_bit_export_gives_the_input_of_its_8_bit_copy(tmp_path):
    rng = np.random.default_rng(0)
    slice_8 = rng.integers(40, 200, (48, 64), dtype=np.uint8)  # no pixel at 0 or 255
    Image.fromarray(slice_8).save(tmp_path / "8.png")
    for scale in (257, 256):  # 0..255 -> 0..65535, and a plain shift by 8 bits
        Image.fromarray(slice_8.astype(np.uint16) * scale).save(tmp_path / f"16_{scale}.png")
        with Image.open(tmp_path / f"16_{scale}.png") as img:
            assert img.mode.startswith("I")  # read as 16-bit, not converted on the way
        np.testing.assert_array_equal(
            load_grey(tmp_path / f"16_{scale}.png", 32), load_grey(tmp_path / "8.png", 32)
        )


def test_grey_input_is_identical_whatever_the_colour_mode(tmp_path: Path):
    rng = np.random.default_rng(0)
    grey = Image.fromarray(rng.integers(0, 255, (60, 80), dtype=np.uint8))
    for mode in ("L", "RGB", "RGBA", "LA"):
        grey.convert(mode).save(tmp_path / f"{mode}.png")
    arrays = [load_grey(tmp_path / f"{m}.png", 32) for m in ("L", "RGB", "RGBA", "LA")]
    for a in arrays[1:]:
        np.testing.assert_array_equal(a, arrays[0])


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
