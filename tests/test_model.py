"""The ViT itself: shapes for every switch, the inspection path, its size."""

from __future__ import annotations

import pytest
import torch

from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT, count_parameters


@pytest.mark.parametrize("tokenizer", ["patch", "conv"])
@pytest.mark.parametrize("pooling", ["cls", "mean", "seq"])
def test_forward_shapes_for_every_switch(tokenizer, pooling):
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        embed_dim=16,
        depth=2,
        heads=2,
        tokenizer=tokenizer,
        pooling=pooling,
        drop_path=0.1,
    )
    model = ViT(cfg).eval()
    logits, attn = model(torch.randn(3, 1, 32, 32), return_attention=True)
    tokens = 16 + (pooling == "cls")
    assert logits.shape == (3, 2)
    assert len(attn) == 2 and attn[0].shape == (3, 2, tokens, tokens)
    torch.testing.assert_close(attn[0].sum(-1), torch.ones(3, 2, tokens))
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():  # the head reads the pooled features: one path for both
        features = model.features(x)
        assert features.shape == (3, 16)
        torch.testing.assert_close(model(x), model.head(features))


@pytest.mark.parametrize(
    "switches",
    [{"tokenizer": "patch", "pooling": "cls"}, {}],  # {}: the defaults (conv stem, attention pool)
    ids=["patch-cls", "defaults"],
)
def test_inspection_path_gives_the_same_logits_as_the_fused_kernel(switches):
    cfg = ViTConfig(image_size=32, patch_size=8, embed_dim=16, depth=2, heads=4, **switches)
    model = ViT(cfg).eval()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x, return_attention=True)[0])


def test_original_study_model_is_small():
    # The original study's model: one strided conv for the patches and a class token.
    cfg = ViTConfig(
        image_size=224,
        patch_size=16,
        embed_dim=64,
        depth=3,
        heads=4,
        tokenizer="patch",
        pooling="cls",
    )
    assert count_parameters(ViT(cfg)) < 200_000
