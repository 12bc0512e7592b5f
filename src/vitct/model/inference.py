"""What every use of a trained model needs, training or not: bf16 autocast on CUDA, the logits
and pooled features of a batch of images, and the one function that turns logits into the COVID
probability with a temperature (`covid_probability`): training's validation (T = 1), scoring,
`vitct predict` and every title that shows a probability get it from here, so a calibrated model
file gives the same number everywhere. Kept apart from the training loop so that predicting,
evaluating and attention maps never import it."""

from __future__ import annotations

import numpy as np
import torch

from vitct.model.input_tensors import normalise
from vitct.model.vit import ViT


def autocast(device: torch.device, bf16: bool = True):
    # bf16 autocast on CUDA only (training.bf16): same numerics class as fp32 for this model.
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


def covid_probability(logits, temperature: float = 1.0) -> np.ndarray:
    """COVID probability softmax(logits / T)[:, 1] of (N, 2) logits, in float64.

    T > 0 (vitct.model.calibration fits it) keeps the sign of the logit difference, so no
    predicted class changes; T = 1 is the model as trained."""
    if not (temperature > 0 and np.isfinite(temperature)):
        raise ValueError(f"the temperature must be a positive finite number, not {temperature}")
    z = torch.as_tensor(np.asarray(logits)).to(torch.float64).reshape(-1, 2)
    return (z / temperature).softmax(dim=1)[:, 1].numpy()


def predict_proba(
    model: ViT,
    images: np.ndarray,
    mean: float,
    std: float,
    batch: int = 256,
    bf16: bool = True,
    temperature: float = 1.0,
) -> np.ndarray:
    """COVID probability for each uint8 (N, H, W) image (`bf16` autocast on CUDA only)."""
    return predict_with_features(model, images, mean, std, batch, bf16, temperature)[0]


def predict_with_features(
    model: ViT,
    images: np.ndarray,
    mean: float,
    std: float,
    batch: int = 256,
    bf16: bool = True,
    temperature: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """COVID probability (N,) at `temperature` and pooled features (N, D) of each uint8
    (N, H, W) image, from one forward pass."""
    logits, features = logits_and_features(model, images, mean, std, batch, bf16)
    return covid_probability(logits, temperature), features


@torch.no_grad()
def logits_and_features(
    model: ViT, images: np.ndarray, mean: float, std: float, batch: int = 256, bf16: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, 2) and pooled features (N, D), float32, of each uint8 (N, H, W) image from one
    forward pass: features, then the head on them (what `model(x)` computes)."""
    model.eval()
    device = next(model.parameters()).device
    logits, features = [], []
    for i in range(0, len(images), batch):
        x = normalise(images[i : i + batch], mean, std).to(device)
        with autocast(device, bf16):
            f = model.features(x)
            out = model.head(f)
        logits.append(out.float().cpu())
        features.append(f.float().cpu())
    if not logits:
        width = model.cfg.embed_dim
        return np.zeros((0, model.cfg.num_classes), np.float32), np.zeros((0, width), np.float32)
    return torch.cat(logits).numpy(), torch.cat(features).numpy()
