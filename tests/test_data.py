"""The model's input from an image file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from odd_images import NOT_A_SLICE, frames, not_a_slice, sideways, slice_pixels, transparent
from PIL import Image

from vitct.data.images import ImagePolicyError, ImageWarning, load_grey, open_grey


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


# --- as a viewer shows it: orientation, transparency, frames ---------------------------------


def test_a_file_stored_sideways_with_an_exif_orientation_is_read_upright(tmp_path: Path):
    upright = slice_pixels()
    Image.fromarray(upright).save(tmp_path / "upright.png")
    png = sideways(tmp_path / "sideways.png", upright)  # lossless: the very pixels
    assert np.array_equal(np.asarray(open_grey(png)), upright)
    np.testing.assert_array_equal(load_grey(png, 32), load_grey(tmp_path / "upright.png", 32))
    jpeg = sideways(tmp_path / "sideways.jpg", upright, quality=95)
    stored = np.asarray(Image.open(jpeg).convert("L"))  # the sideways pixels as stored
    assert stored.shape == (64, 48)
    assert np.array_equal(np.asarray(open_grey(jpeg)), np.rot90(stored, -1))


def test_transparent_pixels_are_black_not_the_colour_under_them_and_said(tmp_path: Path):
    path, shown = transparent(tmp_path / "part.png", 0.2)
    with pytest.warns(ImageWarning, match=r"partly transparent \(20% of pixels"):
        grey = open_grey(path)
    assert np.array_equal(np.asarray(grey), shown)


def test_a_mostly_transparent_image_is_refused(tmp_path: Path):
    path, _ = transparent(tmp_path / "mostly.png", 0.6)
    with pytest.raises(ImagePolicyError, match=r"^mostly transparent \(60% of pixels\): "):
        open_grey(path)


@pytest.mark.parametrize("name, n", [("stack.tif", 2), ("animation.gif", 3)])
def test_a_file_of_several_frames_is_refused(tmp_path: Path, name, n):
    path = frames(tmp_path / name, n)
    with pytest.raises(ImagePolicyError, match=f"^{n} frames .*export one slice per file"):
        open_grey(path)


# --- content that is no CT slice ----------------------------------------------------------------


@pytest.mark.parametrize("kind", NOT_A_SLICE)
def test_content_that_is_no_ct_slice_is_refused_with_what_was_found(tmp_path: Path, kind):
    not_a_slice(kind).save(tmp_path / "x.png")
    with pytest.raises(ImagePolicyError, match="^" + NOT_A_SLICE[kind]):
        load_grey(tmp_path / "x.png", 32)


def test_grey_slices_in_colour_modes_and_small_colour_marks_pass(tmp_path: Path):
    grey = slice_pixels((80, 100))
    rgb = np.dstack([grey] * 3)
    rgb[10:20, 10:30] = (255, 0, 0)  # a red arrow of a paper's figure: 2.5% of the pixels
    for mode in ("RGB", "RGBA"):
        Image.fromarray(rgb).convert(mode).save(tmp_path / f"{mode}.png")
        Image.fromarray(grey).convert(mode).save(tmp_path / f"grey_{mode}.png")
        for name in (f"{mode}.png", f"grey_{mode}.png"):
            assert load_grey(tmp_path / name, 32).shape == (32, 32)
