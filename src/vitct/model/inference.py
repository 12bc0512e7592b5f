"""What every use of a trained model needs, training or not: bf16 autocast on
CUDA and the COVID probability (and pooled features) of a batch of images. Kept apart from the
training loop so that predicting, evaluating and attention maps never import it."""

from __future__ import annotations

import numpy as np
import torch

from vitct.model.input_tensors import normalise
from vitct.model.vit import ViT


def autocast(device: torch.device, bf16: bool = True):
    # bf16 autocast on CUDA only (training.bf16): same numerics class as fp32 for this model.
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


def predict_proba(
    model: ViT, images: np.ndarray, mean: float, std: float, batch: int = 256, bf16: bool = True
) -> np.ndarray:
    """COVID probability for each uint8 (N, H, W) image (`bf16` autocast on CUDA only)."""
    return predict_with_features(model, images, mean, std, batch, bf16)[0]


@torch.no_grad()
def predict_with_features(
    model: ViT, images: np.ndarray, mean: float, std: float, batch: int = 256, bf16: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """COVID probability (N,) and pooled features (N, D) of each uint8 (N, H, W) image, from one
    forward pass: features, then the head on them (what `model(x)` computes)."""
    model.eval()
    device = next(model.parameters()).device
    probs, features = [], []
    for i in range(0, len(images), batch):
        x = normalise(images[i : i + batch], mean, std).to(device)
        with autocast(device, bf16):
            f = model.features(x)
            logits = model.head(f)
        probs.append(logits.float().softmax(dim=1)[:, 1].cpu())
        features.append(f.float().cpu())
    if not probs:
        return np.zeros(0), np.zeros((0, model.cfg.embed_dim), np.float32)
    return torch.cat(probs).numpy(), torch.cat(features).numpy()
