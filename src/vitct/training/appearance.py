"""Appearance augmentation: each training image shown as if it came from another source.

The two classes of the real data differ in their grey levels as a whole (scanner and export), so
a model can learn the source instead of the lungs, and it scores near chance on slices from
elsewhere (papers' figures: other windows, gamma, contrast, blur, noise, resolution, black or
white backgrounds, JPEG). Drawing those per image in training stops global grey levels from
predicting the label. It works on images in [0, 1], before standardisation, with every draw
from the training generator, so a seed reproduces it, on the CPU or CUDA.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vitct.training.settings import TrainConfig

# Each op applies on its own to half the selected images, so every combination occurs, the
# untouched image too.
P_OP = 0.5
WINDOW_LO, WINDOW_HI = (0.0, 0.25), (0.75, 1.0)  # grey window [lo, hi] stretched to [0, 1]
GAMMA = (0.5, 2.0)  # log-uniform: as many brighter images as darker ones
CONTRAST, BRIGHTNESS = (0.7, 1.3), (-0.15, 0.15)
BACKGROUND = 1.5 / 255  # grey 0 or 1 of 255: the darkest value, the air around the body
RESAMPLE = (0.4, 1.0)  # the side at the lower resolution, as a share of the image's
BLUR_SIGMA, MIN_SIGMA = (0.0, 1.2), 0.3  # px; a sigma under 0.3 leaves the image as it is
NOISE_SD = (0.0, 0.05)
JPEG_QUALITY = (20, 90)

# One uniform draw per image for each of these, all in one call: the op's coin, then its values.
DRAWS = (
    *("select", "window", "lo", "hi", "gamma", "g", "contrast", "c", "b"),
    *("background", "white", "resample", "factor", "blur", "sigma", "noise", "sd"),
    *("jpeg", "quality"),
)


def appearance_augment(x01: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Images (B, 1, H, W) in [0, 1] -> the same, each picked with probability cfg.appearance
    given random grey levels, background, resolution, blur, noise and JPEG artefacts."""
    b = x01.shape[0]
    draws = torch.rand(len(DRAWS), b, generator=gen, device=gen.device).to(x01.device)
    u = dict(zip(DRAWS, draws, strict=True))
    picked = u["select"] < cfg.appearance

    def on(op: str) -> torch.Tensor:
        return (picked & (u[op] < P_OP)).view(b, 1, 1, 1)

    def value(name: str, lo: float, hi: float) -> torch.Tensor:
        return (u[name] * (hi - lo) + lo).view(b, 1, 1, 1)

    x = x01
    background = x <= BACKGROUND  # found before the grey levels move
    lo, hi = value("lo", *WINDOW_LO), value("hi", *WINDOW_HI)
    x = torch.where(on("window"), ((x - lo) / (hi - lo)).clamp(0, 1), x)
    gamma = value("g", math.log(GAMMA[0]), math.log(GAMMA[1])).exp()
    x = torch.where(on("gamma"), x.pow(gamma), x)
    c, bright = value("c", *CONTRAST), value("b", *BRIGHTNESS)
    x = torch.where(on("contrast"), ((x - 0.5) * c + 0.5 + bright).clamp(0, 1), x)
    white = (u["white"] < 0.5).to(x.dtype).view(b, 1, 1, 1)  # black or white, half each
    x = torch.where(on("background") & background, white, x)
    x = resample(x, on("resample").flatten(), value("factor", *RESAMPLE).flatten())
    x = blur(x, torch.where(on("blur").flatten(), value("sigma", *BLUR_SIGMA).flatten(), 0.0))
    noise = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)
    x = torch.where(on("noise"), (x + noise * value("sd", *NOISE_SD)).clamp(0, 1), x)
    return jpeg(x, on("jpeg").flatten(), value("quality", *JPEG_QUALITY).flatten().round())


def resample(x: torch.Tensor, on: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Images where `on` scaled down to `factor` of their side (bilinear) and back up: a
    lower-resolution source."""
    rows = on.nonzero().flatten().tolist()
    if not rows:
        return x
    h, w = x.shape[-2:]
    x, factor = x.clone(), factor.tolist()
    for i in rows:  # each image its own size: one call per image
        size = (max(round(h * factor[i]), 1), max(round(w * factor[i]), 1))
        small = F.interpolate(x[i : i + 1], size=size, mode="bilinear", antialias=True)
        x[i : i + 1] = F.interpolate(small, size=(h, w), mode="bilinear")
    return x


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with each image's own sigma (px; under MIN_SIGMA none), as two 1-D
    convolutions of the whole batch with one group, and one kernel, per image."""
    b, _, h, w = x.shape
    r = math.ceil(3 * BLUR_SIGMA[1])
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma.clamp_min(MIN_SIGMA).view(b, 1)) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)
    kernel = torch.where((sigma >= MIN_SIGMA).view(b, 1), kernel, (t == 0).to(x.dtype))
    y = x.reshape(1, b, h, w)  # the border repeats the edge, as in augment
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), kernel.view(b, 1, 1, -1), groups=b)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), kernel.view(b, 1, -1, 1), groups=b)
    return y.view(b, 1, h, w)


def jpeg(x: torch.Tensor, on: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Images where `on` JPEG-encoded at their quality and decoded (PIL, on the CPU)."""
    rows = on.nonzero().flatten().tolist()
    if not rows:
        return x
    grey = (x[rows, 0] * 255).round().to(torch.uint8).cpu().numpy()
    decoded = []
    for image, q in zip(grey, quality[rows].tolist(), strict=True):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=int(q))
        buf.seek(0)
        decoded.append(np.asarray(Image.open(buf).convert("L")))
    x = x.clone()
    x[rows, 0] = torch.from_numpy(np.stack(decoded)).to(x.device, x.dtype) / 255
    return x
