"""What the model looks at: per-head attention maps and attention rollout (Abnar & Zuidema)."""

from __future__ import annotations

import numpy as np
import torch

from vitct.model.input_tensors import normalise
from vitct.model.vit import ViT


@torch.no_grad()
def attention_weights(model: ViT, images: np.ndarray, mean: float, std: float) -> list:
    """Per layer, a (B, heads, N, N) array of attention weights for uint8 (B, H, W) images."""
    model.eval()
    device = next(model.parameters()).device
    _, attentions = model(normalise(images, mean, std).to(device), return_attention=True)
    return [a.float().cpu().numpy() for a in attentions]


def patch_scores(weights: np.ndarray, has_cls: bool) -> np.ndarray:
    """(..., N, N) attention -> (..., patches): how much each patch is attended to.

    With a class token that is the class token's row; without one (mean or sequence pooling)
    the average attention each patch receives.
    """
    if has_cls:
        return weights[..., 0, 1:]
    return weights.mean(axis=-2)


def rollout(attentions: list, has_cls: bool) -> np.ndarray:
    """Attention through all layers: average heads, add the residual, renormalise, multiply."""
    result = None
    for layer in attentions:  # (B, heads, N, N)
        a = layer.mean(axis=1)
        a = a + np.eye(a.shape[-1])
        a = a / a.sum(axis=-1, keepdims=True)
        result = a if result is None else a @ result
    return patch_scores(result, has_cls)


def to_grid(scores: np.ndarray, grid: int) -> np.ndarray:
    """(..., patches) -> (..., grid, grid), scaled to [0, 1] per map."""
    maps = scores.reshape(*scores.shape[:-1], grid, grid)
    lo = maps.min(axis=(-1, -2), keepdims=True)
    hi = maps.max(axis=(-1, -2), keepdims=True)
    return (maps - lo) / np.where(hi > lo, hi - lo, 1)
