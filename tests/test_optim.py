"""Which parameters get weight decay."""

from __future__ import annotations

import pytest
from conftest import learnable_cache

from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT
from vitct.training.loop import train
from vitct.training.optim import parameter_groups
from vitct.training.settings import TrainConfig

# One strided conv for the patches: every norm layer is named "norm" (a conv stem's BatchNorm
# is not).
TINY = {"image_size": 16, "patch_size": 4, "embed_dim": 16, "depth": 1, "heads": 2}
TINY["tokenizer"] = "patch"


@pytest.mark.parametrize("pooling", ["cls", "seq"])
def test_weight_decay_leaves_biases_norms_position_embeddings_and_tokens_alone(pooling):
    model = ViT(ViTConfig(**TINY, pooling=pooling))
    decay, keep = parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    kept = {names[id(p)] for p in keep["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert (decay["weight_decay"], keep["weight_decay"]) == (0.05, 0.0)
    assert kept | decayed == set(names.values()) and not kept & decayed
    assert "pos_embed" in kept and ("cls_token" in kept) == (pooling == "cls")
    assert all(n.endswith(".bias") or "norm" in n for n in kept - {"pos_embed", "cls_token"})
    assert "blocks.0.attn.qkv.weight" in decayed and "head.weight" in decayed
    assert "blocks.0.norm1.weight" in kept and "head.bias" in kept


def test_weight_decay_on_every_parameter_when_not_selective():
    cfg = ViTConfig(**TINY, pooling="cls")
    model = ViT(cfg)
    assert list(parameter_groups(model, 0.05, selective=False)) == list(model.parameters())
    selective = TrainConfig(
        epochs=2, batch_size=16, weight_decay=0.5, augment=True, cutmix=0.0, label_smoothing=0.0
    )
    everything = TrainConfig(**{**selective.__dict__, "selective_weight_decay": False})
    _, history, _ = train(cfg, selective, learnable_cache())
    _, history_everything, _ = train(cfg, everything, learnable_cache())
    assert not history.train_loss.equals(history_everything.train_loss)  # reaches the optimiser
