"""The training loop: it learns, keeps the best epoch, is reproducible, resumes and compiles
only where it should."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SMALL_VIT, learnable_cache, scans_with_a_square

from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT
from vitct.training import loop as train_module
from vitct.training.loop import maybe_compile, train
from vitct.training.optim import NonFiniteLossError
from vitct.training.settings import TrainConfig

# The model and recipe these tests were written for, set in full since the defaults changed
# (they are the shipped recipe now: a conv stem, attention pooling, CutMix, label smoothing).
TINY_VIT = {
    "image_size": 16,
    "patch_size": 4,
    "embed_dim": 16,
    "depth": 1,
    "heads": 2,
    "dropout": 0.1,
    "tokenizer": "patch",
    "pooling": "cls",
}
PLAIN = {"augment": True, "cutmix": 0.0, "label_smoothing": 0.0}


def test_training_learns_and_keeps_the_best_epoch():
    cfg = ViTConfig(**{**TINY_VIT, "dropout": 0.0})
    tcfg = TrainConfig(
        epochs=8,
        batch_size=16,
        lr=3e-3,
        warmup_epochs=1,
        augment=False,
        cutmix=0.0,
        label_smoothing=0.0,
    )
    model, history, best = train(cfg, tcfg, learnable_cache())
    assert best["val_accuracy"] >= 0.9
    assert best["val_mcc"] == history.val_mcc.max()
    assert best["epoch"] == int(history.loc[history.val_mcc.idxmax(), "epoch"])


def test_training_is_reproducible_bit_for_bit():
    cfg = ViTConfig(**TINY_VIT)
    tcfg = TrainConfig(**PLAIN, epochs=2, batch_size=16, seed=3)
    _, h1, _ = train(cfg, tcfg, learnable_cache())
    _, h2, _ = train(cfg, tcfg, learnable_cache())
    assert h1.equals(h2)


def test_non_finite_loss_names_epoch_and_batch():
    cfg = ViTConfig(**TINY_VIT)
    tcfg = TrainConfig(**PLAIN, epochs=1, batch_size=16, lr=1e30, grad_clip=0.0, warmup_epochs=0)
    cache = learnable_cache()
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch \d+"):
        train(cfg, tcfg, cache)


def test_interrupted_then_resumed_training_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    cfg = ViTConfig(**{**TINY_VIT, "dropout": 0.2})
    tcfg = TrainConfig(**PLAIN, epochs=4, batch_size=16, seed=5)
    cache = learnable_cache()
    model_a, history_a, _ = train(cfg, tcfg, cache)

    real_evaluate = train_module.evaluate_split
    calls = {"n": 0}

    def crash_in_epoch_3(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")  # as if the job died after epoch 2's checkpoint
        return real_evaluate(*args)

    resume = tmp_path / "resume.pt"
    monkeypatch.setattr(train_module, "evaluate_split", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tcfg, cache, resume_path=resume, run_id="r1")
    assert resume.exists()
    monkeypatch.setattr(train_module, "evaluate_split", real_evaluate)
    model_b, history_b, _ = train(cfg, tcfg, cache, resume_path=resume, run_id="r1")
    assert history_a.equals(history_b)
    pairs = zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True)
    for (name, a), b in pairs:
        assert torch.equal(a, b), name


def test_a_checkpoint_from_another_run_is_not_resumed(tmp_path):
    cfg = ViTConfig(**TINY_VIT)
    tcfg = TrainConfig(**PLAIN, epochs=2, batch_size=16)
    resume = tmp_path / "resume.pt"
    train(cfg, tcfg, learnable_cache(), resume_path=resume, run_id="a")
    _, history, _ = train(cfg, tcfg, learnable_cache(), resume_path=resume, run_id="b")
    assert list(history.epoch) == [1, 2]


def test_compile_is_used_on_cuda_only_unless_asked():
    model = ViT(ViTConfig(**TINY_VIT))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert maybe_compile(model, "auto", cpu) is model
    assert maybe_compile(model, "never", cuda) is model
    assert maybe_compile(model, "auto", cuda) is not model  # wrapping compiles nothing yet
    assert maybe_compile(model, "always", cpu) is not model


def test_training_with_cutmix_learns():
    y = np.arange(48) % 2
    x = scans_with_a_square()
    x[y == 1, :2, :] = 250
    cache = {"train_x": x, "train_y": y, "val_x": x, "val_y": y}
    cache["mean"], cache["std"] = x.mean() / 255, x.std() / 255
    tcfg = TrainConfig(
        epochs=8, cutmix=1.0, batch_size=16, lr=3e-3, augment=False, label_smoothing=0.0
    )
    _, history, best = train(
        ViTConfig(**{**SMALL_VIT, "tokenizer": "patch", "pooling": "cls"}), tcfg, cache
    )
    assert best["val_accuracy"] >= 0.9
    assert history.train_accuracy.between(0, 1).all()
