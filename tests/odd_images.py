"""Files that decode but are no plain CT slice, for the tests of the decoding and content policy
(vitct.data.images, vitct.data.content): a slice stored sideways with an EXIF orientation tag,
transparent PNGs, multi-frame files, and content that is no slice at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATION = 0x0112  # the EXIF tag; 6: rotate 90 degrees clockwise to show upright


def slice_pixels(shape=(48, 64), seed=0) -> np.ndarray:
    """Grey noise with a bright top-left corner, so that a rotation shows."""
    pixels = np.random.default_rng(seed).integers(30, 160, shape, dtype=np.uint8)
    pixels[:8, :8] = 250
    return pixels


def sideways(path: Path, upright: np.ndarray, **save) -> Path:
    """upright's pixels stored rotated a quarter turn anticlockwise, with the EXIF tag (6) that
    makes every viewer turn them back."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(np.rot90(upright)).save(path, exif=exif, **save)
    return path


def transparent(path: Path, hidden_share: float, seed=0) -> tuple[Path, np.ndarray]:
    """A grey RGBA PNG whose first rows (hidden_share of them) are fully transparent over bright
    colour; returns the path and the grey slice a viewer shows (the transparent rows black)."""
    grey = slice_pixels((50, 60), seed)
    rows = round(50 * hidden_share)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    rgba[:rows, :, :3] = (255, 200, 0)  # what the transparency hides
    rgba[:rows, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(path)
    shown = grey.copy()
    shown[:rows] = 0
    return path, shown


def frames(path: Path, n: int) -> Path:
    """A GIF (.gif) or TIFF stack (.tif) of n slices."""
    slices = [Image.fromarray(slice_pixels(seed=k)) for k in range(n)]
    slices[0].save(path, save_all=True, append_images=slices[1:])
    return path


def not_a_slice(kind: str) -> Image.Image:
    """Content that is no CT slice: blank, colour, or a strip."""
    rng = np.random.default_rng(1)
    if kind == "all black":
        return Image.new("L", (64, 64), 0)
    if kind == "all white":
        return Image.new("RGB", (64, 64), (255, 255, 255))
    if kind == "colour noise":
        return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    if kind == "colour gradient":
        ramp = np.linspace(0, 255, 64)[None, :].repeat(48, 0)
        return Image.fromarray(np.dstack([ramp, 80 + 0 * ramp, 255 - ramp]).astype(np.uint8))
    if kind == "strip":
        return Image.fromarray(rng.integers(0, 256, (20, 2000), dtype=np.uint8))
    raise ValueError(kind)


NOT_A_SLICE = {  # kind: the start of the reason
    "all black": "blank or near-constant image",
    "all white": "blank or near-constant image",
    "colour noise": "colour image",
    "colour gradient": "colour image",
    "strip": "extreme aspect ratio: 2000x20 pixels",
}
