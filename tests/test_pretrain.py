"""Masked-image pretraining: what it hides, what it learns, how it resumes and when it is shared."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL_VIT, scans_with_a_square, top_edge_cache

from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT
from vitct.training import loop
from vitct.training import pretrain as pretrain_module
from vitct.training.loop import pretrain_encoder, train
from vitct.training.optim import NonFiniteLossError
from vitct.training.pretrain import (
    MaskedImageModel,
    PretrainingMismatchError,
    hide_patches,
    patch_pixels,
    pretrain,
    random_patch_mask,
)
from vitct.training.settings import TrainConfig

# The small ViT with one strided conv and a class token (the defaults are a conv stem and
# attention pooling now: slower, and not what most of these tests are about).
PATCH_VIT = {**SMALL_VIT, "tokenizer": "patch", "pooling": "cls"}
# The supervised recipe these tests were written for: geometric augmentation, hard labels, no
# CutMix (pretraining itself always augments and ignores the other two).
PLAIN = {"augment": True, "cutmix": 0.0, "label_smoothing": 0.0}


def test_patch_pixels_follow_the_tokenizers_order():
    x = torch.arange(16 * 16, dtype=torch.float32).view(1, 1, 16, 16)
    tiles = patch_pixels(x, 4)
    assert tiles.shape == (1, 16, 16)
    # token 6 of a 4x4 grid is row 1, column 2: pixels 4..7 x 8..11
    np.testing.assert_array_equal(tiles[0, 6].view(4, 4), x[0, 0, 4:8, 8:12])


def test_a_one_patch_grid_is_refused_rather_than_a_nan_loss():
    # One patch cannot be both hidden and seen; the loss would divide by zero hidden patches.
    with pytest.raises(ValueError, match="needs two patches at least"):
        random_patch_mask(2, 1, 0.5, torch.Generator().manual_seed(0))
    assert random_patch_mask(2, 2, 0.5, torch.Generator().manual_seed(0)).sum(1).tolist() == [2, 2]


@pytest.mark.parametrize("tokenizer", ["patch", "conv"])
def test_hidden_patches_reach_only_the_target(tokenizer):
    """The prediction may not depend on the pixels it must redraw, only on the seen ones."""
    mim = MaskedImageModel(ViT(ViTConfig(**{**PATCH_VIT, "tokenizer": tokenizer}))).eval()
    x = torch.randn(2, 1, 16, 16)
    mask = random_patch_mask(2, 4, 0.5, torch.Generator().manual_seed(0))
    pixels = mask.view(2, 1, 4, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)

    def prediction(images):
        tokens, _ = mim.vit.encode(hide_patches(images, mask, 4), masked=(mask, mim.mask_token))
        return mim.predict(tokens)

    with torch.no_grad():
        base = prediction(x)
        assert torch.equal(base, prediction(torch.where(pixels, x + 5.0, x)))
        assert not torch.allclose(base, prediction(torch.where(pixels, x, x + 5.0)))
    assert mask.sum(1).tolist() == [8, 8]  # exactly half the patches of each image


def test_pretraining_lowers_the_reconstruction_loss_and_leaves_the_head_alone(caplog):
    torch.manual_seed(0)
    vit = ViT(ViTConfig(**{**SMALL_VIT, "tokenizer": "conv", "pooling": "seq"}))
    head = vit.head.weight.detach().clone()
    stem = vit.patch_embed.proj[0].weight.detach().clone()
    images = scans_with_a_square()
    cfg = TrainConfig(pretrain_epochs=15, batch_size=16, lr=3e-3)
    mean, std = images.mean() / 255, images.std() / 255
    with caplog.at_level(logging.INFO, logger="vitct.training.pretrain"):
        losses = pretrain(vit, images, cfg, mean, std, torch.Generator().manual_seed(0))
    assert len(losses) == 15
    assert np.mean(losses[-3:]) < 0.75 * losses[0]
    assert torch.equal(vit.head.weight, head)  # the classifier head is not pretrained
    assert not torch.equal(vit.patch_embed.proj[0].weight, stem)
    assert "pretrain epoch 15/15 reconstruction loss" in caplog.text
    assert "left]" in caplog.text


def test_a_diverging_pretraining_says_what_to_change():
    vit = ViT(ViTConfig(**PATCH_VIT))
    cfg = TrainConfig(pretrain_epochs=2, batch_size=16, lr=1e30, grad_clip=0.0)
    with pytest.raises(NonFiniteLossError, match="pretraining loss became .* at epoch 1: lower"):
        pretrain(vit, scans_with_a_square(), cfg, 0.2, 0.2, torch.Generator().manual_seed(0))


def test_training_with_pretraining_runs_it_first_and_still_learns(caplog):
    y = np.arange(48) % 2
    x = scans_with_a_square()
    x[y == 1, :2, :] = 250  # class 1: a bright top edge
    cache = {"train_x": x, "train_y": y, "val_x": x, "val_y": y}
    cache["mean"], cache["std"] = x.mean() / 255, x.std() / 255
    tcfg = TrainConfig(
        epochs=6,
        pretrain_epochs=2,
        batch_size=16,
        lr=3e-3,
        augment=False,
        cutmix=0.0,
        label_smoothing=0.0,
    )
    with caplog.at_level(logging.INFO):
        _, history, best = train(ViTConfig(**PATCH_VIT), tcfg, cache)
    text = caplog.text
    assert text.index("pretrain epoch 2/2") < text.index("epoch 1/6 loss")
    assert "on 96 images" in text  # the train and validation scans, unlabelled
    assert best["val_accuracy"] >= 0.9
    assert len(history) == 6


def test_training_from_a_shared_pretraining_equals_pretraining_itself():
    mcfg = ViTConfig(**{**PATCH_VIT, "dropout": 0.1, "drop_path": 0.1})
    tcfg = TrainConfig(
        **{**PLAIN, "cutmix": 0.5}, epochs=3, pretrain_epochs=2, batch_size=16, prefetch=False
    )
    cache = top_edge_cache()
    own_model, own_history, _ = train(mcfg, tcfg, cache)
    shared = pretrain_encoder(mcfg, tcfg, cache)
    assert len(shared["losses"]) == 2
    model, history, _ = train(mcfg, tcfg, cache, pretrained=shared)
    pd.testing.assert_frame_equal(history, own_history)  # same draws, same weights
    for a, b in zip(model.parameters(), own_model.parameters(), strict=True):
        assert torch.equal(a, b)
    # Settings that pretraining ignores may differ: label smoothing, CutMix, the epochs.
    other = TrainConfig(**{**tcfg.__dict__, "label_smoothing": 0.1, "cutmix": 0.0, "epochs": 1})
    train(mcfg, other, cache, pretrained=shared)


def _crash_after_steps(monkeypatch, n_steps, stage="pretrain"):
    """Make the n_steps+1-th optimiser step of pretraining (or of the supervised training, with
    stage="train") die, as if the job were killed there."""
    module = {"pretrain": pretrain_module, "train": loop}[stage]
    real_step, calls = module.optimisation_step, {"n": 0}

    def step(*args):
        calls["n"] += 1
        if calls["n"] > n_steps:
            raise KeyboardInterrupt("killed")
        return real_step(*args)

    monkeypatch.setattr(module, "optimisation_step", step)


def test_interrupted_then_resumed_pretraining_equals_an_uninterrupted_one(
    tmp_path, monkeypatch, caplog
):
    mcfg = ViTConfig(**{**PATCH_VIT, "dropout": 0.1, "drop_path": 0.1})
    tcfg = TrainConfig(epochs=1, pretrain_epochs=3, batch_size=16, prefetch=False)
    cache = top_edge_cache()  # 32 train + 16 val scans: 3 steps an epoch
    whole = pretrain_encoder(mcfg, tcfg, cache)

    resume = tmp_path / "pretrain_resume.pt"
    with monkeypatch.context() as m:
        _crash_after_steps(m, 2 * 3 + 1)  # killed inside epoch 3
        with pytest.raises(KeyboardInterrupt):
            pretrain_encoder(mcfg, tcfg, cache, resume_path=resume, run_id="r1")
    assert len(torch.load(resume, weights_only=True)["losses"]) == 2
    with caplog.at_level(logging.INFO, logger="vitct.training.pretrain"):
        resumed = pretrain_encoder(mcfg, tcfg, cache, resume_path=resume, run_id="r1")
    assert "resumed pretraining from" in caplog.text and "after epoch 2" in caplog.text
    assert resumed["losses"] == whole["losses"]
    for name, weights in whole["model"].items():
        assert torch.equal(weights, resumed["model"][name]), name
    assert torch.equal(whole["generator"], resumed["generator"])


def test_a_pretraining_checkpoint_of_another_run_is_ignored(tmp_path, caplog):
    tcfg = TrainConfig(epochs=1, pretrain_epochs=2, batch_size=16, prefetch=False)
    resume = tmp_path / "pretrain_resume.pt"
    pretrain_encoder(ViTConfig(**PATCH_VIT), tcfg, top_edge_cache(), resume_path=resume, run_id="a")
    with caplog.at_level(logging.INFO):
        again = pretrain_encoder(
            ViTConfig(**PATCH_VIT), tcfg, top_edge_cache(), resume_path=resume, run_id="b"
        )
    assert "ignoring checkpoint" in caplog.text and len(again["losses"]) == 2
    assert torch.load(resume, weights_only=True)["run_id"] == "b"  # overwritten by this run


def _killed_training_run(tmp_path, monkeypatch, n_steps, stage):
    """A training run that pretrains for itself, killed after n_steps of `stage` with its
    checkpoints in tmp_path: (the uninterrupted run's history, resume() -> resumed history)."""
    mcfg = ViTConfig(**PATCH_VIT)
    tcfg = TrainConfig(**PLAIN, epochs=2, pretrain_epochs=2, batch_size=16, prefetch=False)
    cache = top_edge_cache()
    _, whole, _ = train(mcfg, tcfg, cache)
    resume = tmp_path / "resume.pt"
    with monkeypatch.context() as m:
        _crash_after_steps(m, n_steps, stage)
        with pytest.raises(KeyboardInterrupt):
            train(mcfg, tcfg, cache, resume_path=resume, run_id="r1")
    return whole, lambda: train(mcfg, tcfg, cache, resume_path=resume, run_id="r1")[1]


def test_training_that_pretrains_resumes_its_pretraining_then_drops_it(tmp_path, monkeypatch):
    # killed inside pretraining epoch 2 (3 steps an epoch)
    whole, resume = _killed_training_run(tmp_path, monkeypatch, 3 + 1, "pretrain")
    assert (tmp_path / "pretrain_resume.pt").exists() and not (tmp_path / "resume.pt").exists()
    pd.testing.assert_frame_equal(resume(), whole)
    assert not (tmp_path / "pretrain_resume.pt").exists()  # the training checkpoint took over


def test_a_resumed_training_drops_a_pretraining_checkpoint_left_behind(tmp_path, monkeypatch):
    # killed inside training epoch 2 (2 steps an epoch)
    whole, resume = _killed_training_run(tmp_path, monkeypatch, 2 + 1, "train")
    stale = tmp_path / "pretrain_resume.pt"
    stale.write_bytes(b"killed before its unlink")  # as a kill right after the first save leaves
    pd.testing.assert_frame_equal(resume(), whole)
    assert not stale.exists()


@pytest.mark.parametrize(
    "model_change, train_change, named",
    [
        ({}, {"mask_ratio": 0.75}, "mask_ratio"),
        ({}, {"seed": 1}, "seed"),
        ({"drop_path": 0.2}, {}, "model"),
    ],
)
def test_a_pretraining_made_with_other_settings_is_refused(model_change, train_change, named):
    tcfg = TrainConfig(epochs=1, pretrain_epochs=1, batch_size=16, prefetch=False)
    cache = top_edge_cache()
    shared = pretrain_encoder(ViTConfig(**PATCH_VIT), tcfg, cache)
    mcfg = ViTConfig(**{**PATCH_VIT, **model_change})
    other = TrainConfig(**{**tcfg.__dict__, **train_change})
    with pytest.raises(PretrainingMismatchError, match=rf"\({named}.* differ\); delete them"):
        train(mcfg, other, cache, pretrained=shared)
