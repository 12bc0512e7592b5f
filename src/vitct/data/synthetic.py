"""Synthetic CT-like lung slices in the Kaggle layout, for the demo and the tests.

Every slice has a body outline, two dark lung fields, vessels, ribs, noise and a random size.
COVID slices add ground-glass opacities: soft, hazy patches of varied size, count and place
inside the lungs, some faint. Non-COVID slices carry confounders (denser vessel clusters,
brighter or darker lungs) so that brightness alone does not give the class away. File colour
modes are drawn independently of the class, to exercise the grey conversion. This is NOT real
data: everything made from it says so.

Scanner "b" renders the same anatomy as another source would: another grey-level mapping
(gamma and contrast), more noise, a bright background, a lower resolution and a tight crop. It
stands in for scans from elsewhere (external evaluation) in the tests and the demo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from vitct.atomic_files import write_output
from vitct.data.classes import CLASS_DIRS

FILE_PREFIX = {"COVID": "Covid", "non-COVID": "Non-Covid"}
SCANNERS = ("a", "b")


def _ellipse_mask(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.ogrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def make_slice(
    rng: np.random.Generator,
    covid: bool,
    size: tuple[int, int] | None = None,
    with_lungs: bool = True,
) -> Image.Image:
    """One grey slice as a PIL image of random size (or `size`, width and height, as a series
    has one); without lungs (`with_lungs` False), a slice above or below them: body, ribs and
    noise."""
    if size is None:
        w = int(rng.integers(180, 530))
        h = int(rng.integers(max(120, int(w * 0.55)), min(420, int(w * 0.95)) + 1))
    else:
        w, h = size
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    cx, cy = w / 2 + rng.normal(0, w * 0.02), h / 2 + rng.normal(0, h * 0.02)
    bx, by = w * rng.uniform(0.40, 0.47), h * rng.uniform(0.38, 0.46)
    draw.ellipse([cx - bx, cy - by, cx + bx, cy + by], fill=int(rng.integers(105, 140)))
    # Ribs: short bright arcs just inside the body outline.
    for angle in np.linspace(0, 2 * np.pi, int(rng.integers(10, 16)), endpoint=False):
        a = angle + rng.normal(0, 0.08)
        px, py = cx + 0.9 * bx * np.cos(a), cy + 0.9 * by * np.sin(a)
        r = rng.uniform(3, 7) * w / 350
        draw.ellipse([px - r, py - r * 0.6, px + r, py + r * 0.6], fill=int(rng.integers(190, 240)))
    if not with_lungs:
        a = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(4, 10), size=(h, w))
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    # Lungs: two dark fields either side of the mediastinum.
    lungs = []
    lung_level = int(rng.integers(18, 48))
    for side in (-1, 1):
        lx = cx + side * bx * rng.uniform(0.42, 0.52)
        ly = cy + rng.normal(0, by * 0.03)
        rx, ry = bx * rng.uniform(0.30, 0.38), by * rng.uniform(0.58, 0.72)
        draw.ellipse([lx - rx, ly - ry, lx + rx, ly + ry], fill=lung_level)
        lungs.append((ly, lx, ry, rx))
    a = np.asarray(img, dtype=np.float32)
    lung_mask = np.zeros_like(a, dtype=bool)
    for ly, lx, ry, rx in lungs:
        lung_mask |= _ellipse_mask(h, w, ly, lx, ry, rx)
    # Vessels: small bright dots and short branches inside the lungs.
    ys, xs = np.nonzero(lung_mask)
    n_vessels = int(rng.integers(25, 60)) + (0 if covid else int(rng.integers(0, 25)))
    vessel = Image.new("L", (w, h), 0)
    vdraw = ImageDraw.Draw(vessel)
    for i in rng.integers(0, len(ys), n_vessels):
        r = rng.uniform(0.8, 2.5) * w / 350
        y, x = ys[i], xs[i]
        vdraw.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.integers(60, 130)))
        if rng.random() < 0.4:
            dx, dy = rng.normal(0, 6, 2) * w / 350
            vdraw.line([x, y, x + dx, y + dy], fill=int(rng.integers(50, 110)), width=1)
    a = np.maximum(a, np.asarray(vessel, dtype=np.float32) * lung_mask)
    if covid:
        # Ground-glass opacities: hazy Gaussian patches clipped to the lungs, varied in number,
        # size, density and place; some are faint so the task stays hard.
        yy, xx = np.mgrid[:h, :w]
        haze = np.zeros_like(a)
        for _ in range(int(rng.integers(1, 6))):
            i = rng.integers(0, len(ys))
            s = rng.uniform(0.04, 0.14) * w
            stretch = rng.uniform(0.6, 1.6)
            blob = np.exp(-(((yy - ys[i]) / (s * stretch)) ** 2 + ((xx - xs[i]) / s) ** 2) / 2)
            haze = np.maximum(haze, blob * rng.uniform(18, 55))
        mottle = rng.uniform(0.6, 1.0, size=a.shape).astype(np.float32)  # GGO is not uniform
        a = a + haze * mottle * lung_mask
    a = a + rng.normal(0, rng.uniform(4, 10), size=a.shape)
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 1.2))))


def scanner_b(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The slice as a second scanner and export would give it: gamma and contrast, a bright
    background outside the body, more noise, half to two thirds the resolution, a tight crop."""
    a = np.asarray(img, dtype=np.float32) / 255.0
    background = a < 0.03
    a = np.clip(0.15 + 0.8 * a ** rng.uniform(0.55, 0.75), 0, 1)
    a[background] = rng.uniform(0.75, 0.95)
    a = a * 255 + rng.normal(0, rng.uniform(10, 16), size=a.shape)
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    w, h = out.size
    scale = rng.uniform(0.5, 0.67)
    out = out.resize((max(16, int(w * scale)), max(16, int(h * scale))), Image.Resampling.BILINEAR)
    w, h = out.size
    dx, dy = int(w * rng.uniform(0.04, 0.1)), int(h * rng.uniform(0.04, 0.1))
    return out.crop((dx, dy, w - dx, h - dy))


def _encode_mode(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Store the grey slice as L, RGB or opaque RGBA at random, independent of the class."""
    mode = rng.choice(["L", "RGB", "RGBA"])
    return img if mode == "L" else img.convert(mode)


def generate(
    out_dir: str | Path, n_per_class: int, seed: int, progress: bool = True, scanner: str = "a"
) -> dict:
    """Write `n_per_class` PNGs into out_dir/COVID and out_dir/non-COVID; return counts.
    `scanner` "b" renders them as another source would (scanner_b)."""
    if scanner not in SCANNERS:
        raise ValueError(f"scanner must be one of {SCANNERS}, not {scanner!r}")
    out_dir = Path(out_dir)
    counts = {}
    for label_index, class_dir in enumerate(CLASS_DIRS):
        folder = out_dir / class_dir
        folder.mkdir(parents=True, exist_ok=True)
        # One child stream per class keeps each class reproducible on its own.
        rng = np.random.default_rng([seed, label_index])
        covid = class_dir == "COVID"
        for i in tqdm(range(1, n_per_class + 1), desc=class_dir, disable=not progress):
            img = make_slice(rng, covid)
            if scanner == "b":
                img = scanner_b(img, rng)
            img = _encode_mode(img, rng)
            path = folder / f"{FILE_PREFIX[class_dir]} ({i}).png"
            write_output(path, lambda f, img=img: img.save(f, format="PNG"))
        counts[class_dir] = n_per_class
    return counts
