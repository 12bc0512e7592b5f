"""What of a slice the model sees: masks, crops and per-image grey levels
(vitct.data.model_input)."""

import numpy as np
import pytest
from PIL import Image

from vitct.data.images import load_grey
from vitct.data.model_input import body_mask, lung_mask, model_input, standardised
from vitct.data.synthetic import generate


def ellipse(shape, centre, radii) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1


def phantom(shape=(200, 260), background=10, lesion=True, seed=0):
    """A CT-like slice: a bright body on a dark background, two dark lungs in it, vessels and
    (optionally) a bright lesion inside the right lung. Returns the image and its true body
    and lung regions."""
    rng = np.random.default_rng(seed)
    h, w = shape
    body = ellipse(shape, (h / 2, w / 2), (h * 0.42, w * 0.45))
    lungs = ellipse(shape, (h / 2, w * 0.3), (h * 0.3, w * 0.14)) | ellipse(
        shape, (h / 2, w * 0.7), (h * 0.3, w * 0.14)
    )
    image = np.full(shape, background, float)
    image[body] = 200
    image[lungs] = 45
    for _ in range(12):  # vessels: small bright dots in the lungs
        y, x = rng.integers(0, h), rng.integers(0, w)
        image[ellipse(shape, (y, x), (2, 2)) & lungs] = 180
    if lesion:
        image[ellipse(shape, (h / 2, w * 0.7), (h * 0.08, w * 0.05))] = 170
    image += rng.normal(0, 4, shape)
    return np.clip(image, 0, 255).astype(np.uint8), body, lungs


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def test_body_and_lung_masks_find_the_body_and_the_lungs_with_their_lesion():
    image, body, lungs = phantom()
    found_body = body_mask(image)
    assert iou(found_body, body) > 0.95
    found_lungs = lung_mask(image, found_body)
    assert iou(found_lungs, lungs) > 0.85
    lesion = ellipse(image.shape, (100, 182), (16, 13))
    assert found_lungs[lesion].mean() > 0.95  # the bright lesion stays inside the lungs


def test_lungs_are_found_when_the_image_is_cropped_through_them():
    image, _, lungs = phantom(lesion=False)
    crop = np.s_[40:160, 40:220]  # the lungs touch the image edge, as in papers' figures
    found = lung_mask(image[crop], body_mask(image[crop]))
    assert iou(found, lungs[crop]) > 0.8


def test_lung_mask_falls_back_to_the_body_when_it_finds_no_lungs():
    image = np.full((100, 100), 5, np.uint8)
    image[20:80, 20:80] = 200  # a body without lungs
    body = body_mask(image)
    assert np.array_equal(lung_mask(image, body), body)


def test_a_blank_image_gets_no_mask_and_no_error():
    blank = Image.fromarray(np.full((40, 50), 90, np.uint8))
    for mask in ("body", "lungs"):
        for intensity in ("raw", "standardise", "equalise"):
            out = model_input(blank, 16, mask, intensity)
            assert out.shape == (16, 16) and out.dtype == np.uint8


def test_no_mask_and_raw_grey_levels_are_the_plain_resize():
    image = Image.fromarray(phantom()[0])
    plain = image.resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=None)
    assert np.array_equal(model_input(image, 32), np.asarray(plain))


def test_the_mask_removes_the_background_and_the_framing():
    image, *_ = phantom(background=10)
    other, *_ = phantom(background=120)  # the same slice on another background
    framed = np.pad(image, 40, constant_values=10)  # and with a wide margin
    plain = [model_input(Image.fromarray(a), 64) for a in (image, other, framed)]
    masked = [model_input(Image.fromarray(a), 64, "lungs") for a in (image, other, framed)]
    assert np.abs(plain[0].astype(int) - plain[2]).mean() > 20
    assert np.abs(masked[0].astype(int) - masked[1]).mean() < 2
    assert np.abs(masked[0].astype(int) - masked[2]).mean() < 4


@pytest.mark.parametrize(
    "intensity, remap, tolerance",
    [
        ("standardise", lambda a: a * 0.6 + 60, 3),  # another window: gain and offset
        ("equalise", lambda a: 255 * (a / 255) ** 1.8, 5),  # any monotone mapping (gamma)
    ],
)
def test_per_image_grey_levels_undo_the_source_mapping(intensity, remap, tolerance):
    image, *_ = phantom()
    mapped = np.clip(remap(image.astype(float)), 0, 255).astype(np.uint8)
    raw = [model_input(Image.fromarray(a), 64, "lungs", "raw") for a in (image, mapped)]
    std = [model_input(Image.fromarray(a), 64, "lungs", intensity) for a in (image, mapped)]
    assert np.abs(raw[0].astype(int) - raw[1]).mean() > 10
    assert np.abs(std[0].astype(int) - std[1]).mean() < tolerance


def test_outside_the_mask_is_black_and_standardised_levels_are_fixed():
    image, _, lungs = phantom()
    out = standardised(image, lungs, "standardise")
    assert not out[~lungs].any()
    assert out[lungs].mean() == pytest.approx(128, abs=3)  # clipped at 1 and 255
    flat = standardised(image, lungs, "equalise")[lungs]
    assert np.histogram(flat, bins=4, range=(0, 256))[0] / flat.size == pytest.approx(
        [0.25] * 4, abs=0.05
    )


def test_load_grey_applies_the_same_preprocessing_to_a_file(tmp_path):
    image, *_ = phantom()
    Image.fromarray(image).save(tmp_path / "slice.png")
    expected = model_input(Image.fromarray(image), 32, "lungs", "equalise")
    assert np.array_equal(load_grey(tmp_path / "slice.png", 32, "lungs", "equalise"), expected)


def test_the_demo_scanners_inputs_agree_once_masked_and_standardised(tmp_path):
    # The demo's two scanners render the same slices (same seed) with other grey levels,
    # noise, background, resolution and crop: what the model sees should differ far less
    # between them with the lungs masked and standardised than as raw images.
    for scanner in ("a", "b"):
        generate(tmp_path / scanner, 4, seed=5, progress=False, scanner=scanner)
    files = sorted((tmp_path / "a").rglob("*.png"))

    def gap(mask, intensity):
        return np.mean(
            [
                np.abs(
                    load_grey(f, 64, mask, intensity).astype(int)
                    - load_grey(tmp_path / "b" / f.relative_to(tmp_path / "a"), 64, mask, intensity)
                ).mean()
                for f in files
            ]
        )

    raw, standardised_lungs = gap("none", "raw"), gap("lungs", "standardise")
    assert standardised_lungs < 0.5 * raw, (raw, standardised_lungs)
