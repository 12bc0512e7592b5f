"""Image decoding: one function turns a file into model input (`load_input`), used by
preprocessing, evaluation and prediction alike, so the model sees the same pixels everywhere.
It decodes with PIL, not torchvision.io: the model file records PIL's grey conversion as its
preprocessing, and torchvision's grey weights and rounding differ from it.

An image is read as a viewer shows it, since that is what a person labelled and what a user
means by it (`decode`):
- turned upright by its EXIF orientation tag: a camera or phone stores a JPEG sideways with a
  tag that every viewer obeys, and its raw pixels would be a sideways slice;
- transparent pixels composited onto black, the CT background, not read from the colour values
  hidden under them; a mostly transparent image is refused, a partly transparent one is used
  with a warning (ImageWarning);
- one image per file: a stack or an animation (several frames) is refused, as classifying or
  training on its first frame alone would silently stand for the whole.
The decoded image must then be a CT slice at all (vitct.data.content: not blank, not colour,
not a strip), so the manifest's rejects table and `vitct predict` refuse the same files.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageOps

from vitct.data.content import content_problem
from vitct.data.dicom import DICOM_MODE, LUNG_WINDOW, DicomSlice, is_dicom, read_dicom
from vitct.data.histograms import grey_histograms
from vitct.data.model_input import model_input
from vitct.data.nifti import NIFTI_MODE, VolumeSlice, read_volume_slice
from vitct.errors import UserError

# One size policy for every image, in training data and in `vitct predict` alike. A CT slice is
# about 512x512 pixels (the real data's: 119 to 534 on a side). A header claiming more than 50
# megapixels (7000x7000) is a decompression bomb (a small file that expands to gigabytes in
# memory), not a slice; one under 16 pixels on a side is an icon or a placeholder.
MAX_IMAGE_PIXELS = 50_000_000
MIN_IMAGE_SIDE = 16
# PIL only warns up to twice its limit; decode() turns that warning into an error too.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


# A pixel with less alpha than this is see-through; an image with more than MAX_TRANSPARENT_SHARE
# of them is mostly transparent: what it shows is mostly the background, not a slice.
SEE_THROUGH_ALPHA = 128
MAX_TRANSPARENT_SHARE = 0.5


class ImagePolicyError(UserError, ValueError):
    """An image that decodes but is no usable CT slice (its size, kind or content); the message
    says why."""


class ImageWarning(UserWarning):
    """An image that is used, but not exactly as stored (partly transparent); the message says
    what was done."""


class Slice(NamedTuple):
    """One decoded image: as a viewer shows it, its grey version, the file's colour mode, and
    for a DICOM file its place in its series and its hashed patient (vitct.data.dicom)."""

    image: Image.Image
    grey: Image.Image
    mode: str
    dicom: DicomSlice | None = None

    @property
    def patient(self) -> str:
        return self.dicom.patient if self.dicom else ""


def to_grey(img: Image.Image) -> Image.Image:
    """Single-channel grey, whatever the file's mode.

    The real data's colour modes leak the label (COVID files are RGB or RGBA, non-COVID files are
    all RGBA), so every image is reduced to luminance; an alpha channel is dropped (decode has
    composited any transparency onto black; the real data's alpha is opaque).
    """
    if img.mode.startswith("I"):
        # 16-bit images keep a fixed window, their top 8 bits: the same slice exported at 16 bits
        # (8-bit values times 257, or times 256) gives the very input of its 8-bit copy. A
        # stretch to each image's own darkest and brightest pixel would not, and would make the
        # input depend on a stray bright pixel. A 12-bit export (values up to 4095) comes out
        # dark: export such slices at 8 bits, or scaled to the whole 16-bit range.
        a = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(a.astype(np.uint8))
    if img.mode == "F":
        raise ImagePolicyError(
            "floating-point image (mode F): it has no fixed grey scale to read; export the "
            "slice as an 8- or 16-bit image"
        )
    return img.convert("L")  # ITU-R 601 luma; alpha dropped (opaque, see flatten)


def check_image_size(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImagePolicyError(
            f"image too large: {width}x{height} pixels is over the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels (a CT slice is about 512x512)"
        )
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImagePolicyError(
            f"image too small: {width}x{height} pixels, under {MIN_IMAGE_SIDE} on a side "
            "(no CT slice)"
        )


def check_frames(img: Image.Image) -> None:
    """One image per file: a stack or an animation is refused (MPO, a camera JPEG with its
    preview images, is one picture: its first frame is the picture)."""
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format != "MPO":
        raise ImagePolicyError(
            f"{frames} frames (a stack or an animation) in one file, and a CT slice is one "
            "image: export one slice per file"
        )


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation tag says, as a viewer shows it."""
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a damaged EXIF block: viewers ignore it, and so does this
        return img
    return img if orientation in (None, 1) else ImageOps.exif_transpose(img)


def with_alpha(img: Image.Image) -> Image.Image:
    """The image with its transparency, if any, as an alpha channel (RGBA or LA), so that a
    palette or colour-key transparency (PNG tRNS) is handled as an alpha channel is."""
    keyed = "transparency" in img.info
    if (img.mode in ("P", "RGB") and keyed) or img.mode in ("PA", "RGBa"):
        return img.convert("RGBA")
    if (img.mode in ("1", "L") and keyed) or img.mode == "La":
        return img.convert("LA")
    return img  # 16-bit and float images with a colour key: not supported, read as stored


def flatten(img: Image.Image) -> Image.Image:
    """Transparent pixels composited onto black, the CT background, as a viewer on black shows
    them, not read from the colour values under them. An opaque image is returned as it is (the
    real data's RGBA files are all opaque); a mostly transparent one raises ImagePolicyError, a
    partly transparent one warns (ImageWarning)."""
    with_a = with_alpha(img)
    if with_a.mode not in ("RGBA", "LA"):
        return img
    alpha = np.asarray(with_a.getchannel("A"))
    if alpha.min() == 255:
        return img
    see_through = float((alpha < SEE_THROUGH_ALPHA).mean())
    if see_through > MAX_TRANSPARENT_SHARE:
        raise ImagePolicyError(
            f"mostly transparent ({see_through:.0%} of pixels): the slice would be read from the "
            "colour values hidden under its transparency; export it without transparency "
            "(flattened onto black)"
        )
    pixels = np.asarray(with_a, dtype=np.uint32)
    a = pixels[..., -1:]
    composite = ((pixels[..., :-1] * a + 127) // 255).astype(np.uint8)
    warnings.warn(
        ImageWarning(
            f"partly transparent ({_percent(float((alpha < 255).mean()))} of pixels not "
            "opaque): composited onto black, the CT background"
        ),
        stacklevel=2,
    )
    return Image.fromarray(composite[..., 0] if with_a.mode == "LA" else composite)


def in_memory(img: Image.Image) -> Image.Image:
    """An in-memory image (a PIL image given to `vitct predict`'s API) made ready for a lossless
    re-encoding that decode then reads: turned upright now, as a TIFF re-encoding drops the EXIF
    tag, and its colour-key transparency made an alpha channel, which TIFF keeps."""
    return with_alpha(upright(img))


def _percent(share: float) -> str:
    return "under 1%" if 0 < share < 0.005 else f"{share:.0%}"


def _decode(source) -> tuple[Image.Image, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                check_image_size(*img.size)
                check_frames(img)
                img.load()
                mode = img.mode
                img = upright(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImagePolicyError(f"image too large (decompression bomb?): {e}") from None
    return flatten(img), mode


def decode(source) -> Image.Image:
    """Open and decode an image (path or file object) fully, within the size policy, as a viewer
    shows it: upright, transparency on black, one frame (see the module's docstring). Raises
    ImagePolicyError for one outside the policy (before decoding a bomb's pixels)."""
    return _decode(source)[0]


def read_slice(
    source, lung_window: tuple[float, float] = LUNG_WINDOW, measure: bool = True
) -> Slice:
    """Decode an image (path or file object) and grey it, and check that it is a CT slice at all
    (vitct.data.content); raises ImagePolicyError with the reason for one that is not. A DICOM
    file, or a NIfTI volume's slice (a VolumeSlice), is read by its Hounsfield units in the
    lung window (vitct.data.dicom, vitct.data.nifti), with its lung share when `measure`."""
    dicom = None
    if isinstance(source, VolumeSlice):
        grey, dicom = read_volume_slice(source, lung_window, measure)
        check_image_size(*grey.size)
        image, mode = grey, NIFTI_MODE
    elif is_dicom(source):
        grey, dicom = read_dicom(source, lung_window, measure)
        check_image_size(*grey.size)
        image, mode = grey, DICOM_MODE
    else:
        image, mode = _decode(source)
        grey = to_grey(image)
    problem = content_problem(image, grey)
    if problem:
        raise ImagePolicyError(problem)
    return Slice(image, grey, mode, dicom)


def open_grey(source) -> Image.Image:
    """Decode an image (path or file object) fully, check it and grey it (read_slice)."""
    return read_slice(source, measure=False).grey  # no series to choose slices of


def square(grey: Image.Image, size: int) -> np.ndarray:
    """Resize a grey image to a square uint8 array."""
    return model_input(grey, size)


def load_grey(source, image_size: int, mask: str = "none", intensity: str = "raw") -> np.ndarray:
    """The model input of one image file: decoded, grey, masked and standardised as the
    preprocessing says (vitct.data.model_input), resized to a square uint8 array."""
    return model_input(open_grey(source), image_size, mask, intensity)


def load_input(
    source,
    image_size: int,
    mask: str = "none",
    intensity: str = "raw",
    lung_window: tuple[float, float] = LUNG_WINDOW,
):
    """As load_grey, plus the histogram of the slice's grey levels as decoded (what the
    familiarity reference compares, vitct.model.ood) and, for a DICOM file, its place in its
    series (vitct.data.series chooses the slices): (input, histogram, DicomSlice or None)."""
    image = read_slice(source, lung_window)
    histogram = grey_histograms([np.asarray(image.grey)])[0]
    return model_input(image.grey, image_size, mask, intensity), histogram, image.dicom
