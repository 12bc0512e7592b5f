"""The Vision Transformer, written on torch primitives and readable in one sitting.

The original study's family: a convolutional patch embedding, N pre-norm self-attention blocks,
a linear head. Switches for small data sets (a convolutional tokenizer, mean or sequence pooling
instead of a class token, stochastic depth) sit beside it, each one config key.

Where dropout acts, and why: `dropout` is applied to the embeddings, to the output of every
attention projection and inside every MLP (timm's `drop_rate`/`proj_drop`). It is *not* applied
to the attention weights by default (`attn_dropout: 0`), because on the CPU any dropout inside
`scaled_dot_product_attention` makes PyTorch leave its fused kernel for a 3-8x slower one that
materialises every attention matrix (5x the memory at patch 8).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vitct.model.settings import ViTConfig


class PatchEmbed(nn.Module):
    """Image -> sequence of tokens, one per patch."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        if cfg.tokenizer == "patch":
            self.proj = nn.Conv2d(cfg.in_channels, cfg.embed_dim, cfg.patch_size, cfg.patch_size)
        else:
            # CCT-style stem: overlapping convolutions keep local texture (ground glass) that a
            # single strided conv averages away; the pooling brings it down to the patch grid.
            stride = cfg.patch_size
            layers, channels = [], cfg.in_channels
            width = cfg.embed_dim // 2
            while stride > 1:
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                ]
                channels, stride = width, stride // 2
                width = cfg.embed_dim
            layers.append(nn.Conv2d(channels, cfg.embed_dim, 1))
            # Channels-last weights make the stem (most of the model's compute) train 1.3x faster
            # on the CPU (benchmarks/conv_stem_layout.py); the activations follow the weights.
            self.proj = nn.Sequential(*layers).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class _RandomDrop(nn.Module):
    """What dropout and stochastic depth share: a rate p, and nothing dropped outside training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return self.drop(x)


class Dropout(_RandomDrop):
    """Inverted dropout, as nn.Dropout, with the mask drawn by uniform_() instead of
    bernoulli_(): the same distribution, about 3x faster on the CPU, where nn.Dropout's mask
    alone took a third of a training step of this small model."""

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.empty_like(x).uniform_().ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * keep


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.attn_dropout = cfg.attn_dropout
        self.proj_drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if return_weights:
            # Inspection path: the fused kernel never forms the attention matrix, so form it here.
            weights = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)
            out = weights @ v
        else:
            weights = None
            p = self.attn_dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))
        return out, weights


class DropPath(_RandomDrop):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.p
        return x * keep / (1.0 - self.p)


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig, drop_path: float):
        super().__init__()
        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        self.norm1 = nn.LayerNorm(cfg.embed_dim)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.embed_dim, hidden),
            nn.GELU(),
            Dropout(cfg.dropout),
            nn.Linear(hidden, cfg.embed_dim),
            Dropout(cfg.dropout),
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        attn_out, weights = self.attn(self.norm1(x), return_weights)
        x = x + self.drop_path(attn_out)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, weights


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        n_tokens = cfg.grid_size**2
        self.cls_token = (
            nn.Parameter(torch.zeros(1, 1, cfg.embed_dim)) if cfg.pooling == "cls" else None
        )
        self.pos_embed = nn.Parameter(
            torch.randn(1, n_tokens + (cfg.pooling == "cls"), cfg.embed_dim) * 0.02
        )
        self.embed_drop = Dropout(cfg.dropout)
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()  # deeper blocks drop more
        self.blocks = nn.ModuleList(Block(cfg, r) for r in rates)
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.pool_attn = nn.Linear(cfg.embed_dim, 1) if cfg.pooling == "seq" else None
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self.apply(_init_weights)

    def no_weight_decay(self) -> set[str]:
        """Parameters that weight decay leaves alone besides biases and norms (timm's hook):
        pulling position embeddings or the class token towards zero only erases them."""
        return {"pos_embed", "cls_token"}

    def encode(self, x: torch.Tensor, return_attention: bool = False, masked=None):
        """Normalised output tokens (B, N, D) and the per-layer attention weights (or Nones).

        `masked`, for masked-image pretraining: a (mask (B, N) bool, token (1, 1, D)) pair; the
        masked patches' embeddings are replaced by the learned token before position embedding.
        """
        x = self.patch_embed(x)
        if masked is not None:
            mask, token = masked
            x = torch.where(mask.unsqueeze(-1), token.to(x.dtype), x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.embed_drop(x + self.pos_embed)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, return_attention)
            attentions.append(weights)
        return self.norm(x), attentions

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled representation (B, D) that the head reads (and familiarity scores)."""
        return self._pool(self.encode(x)[0])

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """Logits (B, classes); with return_attention also a list of (B, heads, N, N) per layer."""
        if not return_attention:
            return self.head(self.features(x))
        x, attentions = self.encode(x, return_attention)
        return self.head(self._pool(x)), attentions

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.pooling == "cls":
            return x[:, 0]
        if self.cfg.pooling == "mean":
            return x.mean(dim=1)
        return (self.pool_attn(x).softmax(dim=1) * x).sum(dim=1)  # sequence pooling (CCT)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
