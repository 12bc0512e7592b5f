"""Is a decoded image a CT slice at all? A check on its content, applied wherever an image is
read (vitct.data.images.read_slice): at the manifest step, so that such a file goes to the
rejects table with its reason instead of into the labelled training data, and in
`vitct predict`, whose error column then says why the image was not classified.

A file that decodes need not be a slice: an export gone wrong (all black, all white), a colour
picture or a screenshot, a strip cut from a figure. The model would learn from or answer for it
all the same, so each check names what it found and what to do. The thresholds sit far from the
real data (measured on its 1,957 training slices and the 371 external UCSD ones): grey-level SD
27 to 101, aspect ratios up to 2.35, and colour only in small marks (arrows, boxes, letters) of
paper figures, at most 2% of an image's pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# A slice shows air, tissue and bone: its grey levels (0-255, as decoded) vary by an SD of 27 or
# more in the real data. One that varies by less than this is blank or near-constant.
MIN_GREY_SD = 5.0
# A pixel is coloured when its channels differ by more than this (of 255): well above the few
# levels of colour noise a JPEG adds to a grey picture.
COLOUR_TOLERANCE = 32
# An image with a larger share of coloured pixels is a colour picture, or a slice under a colour
# overlay; below it, small coloured marks of a figure pass (the slice under them is grey).
MAX_COLOUR_SHARE = 0.10
# A CT slice is about square (the real data's longer side is at most 2.35 times the shorter).
MAX_ASPECT_RATIO = 4.0

# Modes without colour channels: nothing to check for colour.
_GREY_MODES = ("1", "L", "LA", "La", "I", "F")


def content_problem(image: Image.Image, grey: Image.Image) -> str | None:
    """Why the image (as decoded, and its grey version) is no CT slice, or None when it may be
    one. The reason says what was found and what to do."""
    width, height = image.size
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        return (
            f"extreme aspect ratio: {width}x{height} pixels, the longer side {ratio:.3g} times "
            f"the shorter (over {MAX_ASPECT_RATIO:g}); a CT slice is about square: crop the "
            "slice out of the strip or figure, or leave the file out"
        )
    levels = np.asarray(grey)
    sd = float(levels.std())
    if sd < MIN_GREY_SD:
        return (
            f"blank or near-constant image: its grey levels vary by SD {sd:.1f}, under "
            f"{MIN_GREY_SD:g}, around level {levels.mean():.0f} of 255: no CT slice is so even; "
            "check the export (a 12-bit slice saved at 16 bits reads near black: export it at 8 "
            "bits) or leave the file out"
        )
    share = colour_share(image)
    if share > MAX_COLOUR_SHARE:
        return (
            f"colour image: {share:.0%} of its pixels are coloured (channels more than "
            f"{COLOUR_TOLERANCE} levels apart; over {MAX_COLOUR_SHARE:.0%}), and a CT slice is "
            "grey (R=G=B): no CT slice, or one under a colour overlay; export the grey slice alone"
        )
    return None


def colour_share(image: Image.Image) -> float:
    """The share of pixels whose colour channels differ by more than COLOUR_TOLERANCE (0 for an
    image without colour channels, and for a grey one stored as RGB or RGBA)."""
    if image.mode in _GREY_MODES or image.mode.startswith("I;"):
        return 0.0
    rgb = np.asarray(image.convert("RGB"))  # palette, CMYK, YCbCr...: as shown; alpha dropped
    spread = rgb.max(axis=-1).astype(np.int16) - rgb.min(axis=-1)
    return float((spread > COLOUR_TOLERANCE).mean())
