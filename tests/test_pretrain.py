"""Masked-image pretraining and CutMix: what each does to images, targets and weights."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from vitct.batches import cutmix, epoch_batches
from vitct.config import shares_final_pretraining
from vitct.data import normalise
from vitct.model import ViT
from vitct.optim import NonFiniteLossError
from vitct.pretrain import (
    MaskedImageModel,
    PretrainingMismatchError,
    hide_patches,
    patch_pixels,
    pretrain,
    random_patch_mask,
)
from vitct.settings import TrainConfig, ViTConfig
from vitct.train import pretrain_encoder, train

SMALL = dict(image_size=16, patch_size=4, embed_dim=16, depth=1, heads=2, dropout=0.0)


def _toy_images(n=48, size=16, seed=0):
    """Scans with structure to redraw: a bright square at a random place on faint noise."""
    rng = np.random.default_rng(seed)
    x = rng.integers(20, 40, (n, size, size)).astype(np.uint8)
    for img, (r, c) in zip(x, rng.integers(0, size - 6, (n, 2)), strict=True):
        img[r : r + 6, c : c + 6] += 150
    return x


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
    mim = MaskedImageModel(ViT(ViTConfig(**SMALL, tokenizer=tokenizer))).eval()
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
    vit = ViT(ViTConfig(**SMALL, tokenizer="conv", pooling="seq"))
    head = vit.head.weight.detach().clone()
    stem = vit.patch_embed.proj[0].weight.detach().clone()
    images = _toy_images()
    cfg = TrainConfig(pretrain_epochs=15, batch_size=16, lr=3e-3)
    mean, std = images.mean() / 255, images.std() / 255
    with caplog.at_level(logging.INFO, logger="vitct.pretrain"):
        losses = pretrain(vit, images, cfg, mean, std, torch.Generator().manual_seed(0))
    assert len(losses) == 15
    assert np.mean(losses[-3:]) < 0.75 * losses[0]
    assert torch.equal(vit.head.weight, head)  # the classifier head is not pretrained
    assert not torch.equal(vit.patch_embed.proj[0].weight, stem)
    assert "pretrain epoch 15/15 reconstruction loss" in caplog.text
    assert "left]" in caplog.text


def test_a_diverging_pretraining_says_what_to_change():
    vit = ViT(ViTConfig(**SMALL))
    cfg = TrainConfig(pretrain_epochs=2, batch_size=16, lr=1e30, grad_clip=0.0)
    with pytest.raises(NonFiniteLossError, match="pretraining loss became .* at epoch 1: lower"):
        pretrain(vit, _toy_images(), cfg, 0.2, 0.2, torch.Generator().manual_seed(0))


def test_training_with_pretraining_runs_it_first_and_still_learns(caplog):
    y = np.arange(48) % 2
    x = _toy_images()
    x[y == 1, :2, :] = 250  # class 1: a bright top edge
    cache = {"train_x": x, "train_y": y, "val_x": x, "val_y": y}
    cache["mean"], cache["std"] = x.mean() / 255, x.std() / 255
    tcfg = TrainConfig(epochs=6, pretrain_epochs=2, batch_size=16, lr=3e-3, augment=False)
    with caplog.at_level(logging.INFO):
        _, history, best = train(ViTConfig(**SMALL), tcfg, cache)
    text = caplog.text
    assert text.index("pretrain epoch 2/2") < text.index("epoch 1/6 loss")
    assert "on 96 images" in text  # the train and validation scans, unlabelled
    assert best["val_accuracy"] >= 0.9
    assert len(history) == 6


def _toy_cache():
    y = np.arange(48) % 2
    x = _toy_images()
    x[y == 1, :2, :] = 250
    return {
        "train_x": x[:32],
        "train_y": y[:32],
        "val_x": x[32:],
        "val_y": y[32:],
        "mean": 0.2,
        "std": 0.2,
    }


def test_training_from_a_shared_pretraining_equals_pretraining_itself():
    mcfg = ViTConfig(**{**SMALL, "dropout": 0.1, "drop_path": 0.1})
    tcfg = TrainConfig(epochs=3, pretrain_epochs=2, batch_size=16, cutmix=0.5, prefetch=False)
    cache = _toy_cache()
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
    import vitct.pretrain
    import vitct.train

    module = {"pretrain": vitct.pretrain, "train": vitct.train}[stage]
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
    mcfg = ViTConfig(**{**SMALL, "dropout": 0.1, "drop_path": 0.1})
    tcfg = TrainConfig(epochs=1, pretrain_epochs=3, batch_size=16, prefetch=False)
    cache = _toy_cache()  # 32 train + 16 val scans: 3 steps an epoch
    whole = pretrain_encoder(mcfg, tcfg, cache)

    resume = tmp_path / "pretrain_resume.pt"
    with monkeypatch.context() as m:
        _crash_after_steps(m, 2 * 3 + 1)  # killed inside epoch 3
        with pytest.raises(KeyboardInterrupt):
            pretrain_encoder(mcfg, tcfg, cache, resume_path=resume, run_id="r1")
    assert len(torch.load(resume, weights_only=True)["losses"]) == 2
    with caplog.at_level(logging.INFO, logger="vitct.pretrain"):
        resumed = pretrain_encoder(mcfg, tcfg, cache, resume_path=resume, run_id="r1")
    assert "resumed pretraining from" in caplog.text and "after epoch 2" in caplog.text
    assert resumed["losses"] == whole["losses"]
    for name, weights in whole["model"].items():
        assert torch.equal(weights, resumed["model"][name]), name
    assert torch.equal(whole["generator"], resumed["generator"])


def test_a_pretraining_checkpoint_of_another_run_is_ignored(tmp_path, caplog):
    tcfg = TrainConfig(epochs=1, pretrain_epochs=2, batch_size=16, prefetch=False)
    resume = tmp_path / "pretrain_resume.pt"
    pretrain_encoder(ViTConfig(**SMALL), tcfg, _toy_cache(), resume_path=resume, run_id="a")
    with caplog.at_level(logging.INFO):
        again = pretrain_encoder(
            ViTConfig(**SMALL), tcfg, _toy_cache(), resume_path=resume, run_id="b"
        )
    assert "ignoring checkpoint" in caplog.text and len(again["losses"]) == 2
    assert torch.load(resume, weights_only=True)["run_id"] == "b"  # overwritten by this run


def _killed_training_run(tmp_path, monkeypatch, n_steps, stage):
    """A training run that pretrains for itself, killed after n_steps of `stage` with its
    checkpoints in tmp_path: (the uninterrupted run's history, resume() -> resumed history)."""
    mcfg = ViTConfig(**SMALL)
    tcfg = TrainConfig(epochs=2, pretrain_epochs=2, batch_size=16, prefetch=False)
    cache = _toy_cache()
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
    cache = _toy_cache()
    shared = pretrain_encoder(ViTConfig(**SMALL), tcfg, cache)
    mcfg = ViTConfig(**{**SMALL, **model_change})
    other = TrainConfig(**{**tcfg.__dict__, **train_change})
    with pytest.raises(PretrainingMismatchError, match=rf"\({named}.* differ\); delete them"):
        train(mcfg, other, cache, pretrained=shared)


@pytest.mark.parametrize(
    "variant, shares",
    [
        ({"label_smoothing": 0.0}, True),
        ({"augment": True, "cutmix": 0.0, "lr_schedule": "constant"}, True),
        ({"select_best_epoch": False, "epochs": 10}, True),
        ({"drop_path": 0.0}, False),  # a model setting: the model pretrains otherwise
        ({"tokenizer": "patch", "pooling": "cls"}, False),
        ({"mask_ratio": 0.75}, False),
        ({"pretrain_epochs": 0}, False),
        ({"seed": 1}, False),
        ({"grad_clip": 0.0}, False),  # pretraining clips its gradients too
    ],
)
def test_which_ablation_variants_reuse_the_final_models_pretraining(variant, shares):
    assert shares_final_pretraining(variant) is shares


def test_cutmix_targets_are_each_images_share_of_pixels():
    # Image i is filled with the value i, so every pixel tells where it came from.
    x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 1, 16, 16)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    for seed in range(5):
        mixed, target = cutmix(x, y, torch.Generator().manual_seed(seed))
        assert mixed.shape == x.shape and target.shape == (8, 2)
        np.testing.assert_allclose(target.sum(1), 1.0, rtol=1e-6)
        for i in range(8):
            own = (mixed[i] == i).float().mean().item()
            labels = torch.bincount(y[mixed[i].flatten().long()], minlength=2).float() / 256
            if own == 1.0:  # pasted from itself, or an empty box
                assert target[i, y[i]] == pytest.approx(1.0)
            else:
                np.testing.assert_allclose(target[i], labels, atol=1e-6)
    assert not torch.equal(mixed, x)


def test_cutmix_off_leaves_hard_labels_and_the_same_batches():
    x = torch.as_tensor(_toy_images(16))
    y = torch.arange(16) % 2

    def batches(share):
        cfg = TrainConfig(batch_size=8, cutmix=share, augment=False)
        gen = torch.Generator().manual_seed(0)
        return list(epoch_batches(x, y, cfg, 0.2, 0.2, torch.device("cpu"), gen))

    plain, mixed = batches(0.0), batches(1.0)
    assert all(t.ndim == 1 for _, t in plain)
    assert all(t.shape == (8, 2) for _, t in mixed)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(plain, mixed, strict=True))


def test_cutmix_stops_for_the_last_epochs():
    x = torch.as_tensor(_toy_images(16))
    y = torch.arange(16) % 2
    cfg = TrainConfig(epochs=4, batch_size=8, cutmix=1.0, cutmix_off_epochs=2, augment=False)
    gen = torch.Generator().manual_seed(0)
    epochs = [
        list(epoch_batches(x, y, cfg, 0.2, 0.2, torch.device("cpu"), gen, epoch))
        for epoch in range(4)
    ]
    assert all(t.shape == (8, 2) for epoch in epochs[:2] for _, t in epoch)  # soft: mixed
    whole = normalise(x, 0.2, 0.2)
    for epoch in epochs[2:]:
        for images, targets in epoch:
            assert targets.ndim == 1  # hard labels
            for image, label in zip(images, targets, strict=True):  # each a whole scan
                (row,) = [i for i in range(16) if torch.equal(whole[i], image)]
                assert label == y[row]


def test_unmixed_last_epochs_leave_the_earlier_epochs_as_they_were():
    cache = _toy_cache()
    mixed = TrainConfig(epochs=4, cutmix=1.0, batch_size=16, augment=False, prefetch=False)
    unmixed_end = TrainConfig(**{**mixed.__dict__, "cutmix_off_epochs": 2})
    _, history, _ = train(ViTConfig(**SMALL), mixed, cache)
    _, history_off, _ = train(ViTConfig(**SMALL), unmixed_end, cache)
    pd.testing.assert_frame_equal(history[:2], history_off[:2])  # same draws, same weights
    assert not history.train_loss[2:].equals(history_off.train_loss[2:])


def test_training_with_cutmix_learns():
    y = np.arange(48) % 2
    x = _toy_images()
    x[y == 1, :2, :] = 250
    cache = {"train_x": x, "train_y": y, "val_x": x, "val_y": y}
    cache["mean"], cache["std"] = x.mean() / 255, x.std() / 255
    tcfg = TrainConfig(epochs=8, cutmix=1.0, batch_size=16, lr=3e-3, augment=False)
    _, history, best = train(ViTConfig(**SMALL), tcfg, cache)
    assert best["val_accuracy"] >= 0.9
    assert history.train_accuracy.between(0, 1).all()


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"mask_ratio": 1.0}, "mask_ratio must be between 0 and 1"),
        ({"mask_ratio": 0.0}, "mask_ratio must be between 0 and 1"),
        ({"cutmix": 1.5}, "cutmix is a share of batches in"),
        ({"cutmix": -0.1}, "cutmix is a share of batches in"),
        ({"epochs": 4, "cutmix_off_epochs": 4}, "cutmix_off_epochs 4 must be at least 0 and"),
        ({"cutmix_off_epochs": -1}, "cutmix_off_epochs -1 must be at least 0 and fewer"),
    ],
)
def test_bad_pretraining_and_cutmix_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)
