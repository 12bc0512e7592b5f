"""Batches for training: augmentation, appearance augmentation, CutMix and its last unmixed
epochs, prefetching."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL_VIT, learnable_cache, scans_with_a_square, top_edge_cache

from vitct.model.input_tensors import normalise
from vitct.model.settings import ViTConfig
from vitct.training.batches import Prefetcher, augment, cutmix, epoch_batches
from vitct.training.loop import train
from vitct.training.settings import TrainConfig

# The small ViT with one strided conv and a class token (the defaults are a conv stem and
# attention pooling now, slower and not what these tests are about).
PATCH_VIT = {**SMALL_VIT, "tokenizer": "patch", "pooling": "cls"}


def test_augment_keeps_shape_and_varies_per_sample():
    x = torch.randn(8, 1, 16, 16).repeat(1, 1, 1, 1)
    x[:] = x[0]
    out = augment(x, TrainConfig(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert not torch.allclose(out[0], out[1])


def plain_batches(x, y, cfg, mean, std, gen):
    """epoch_batches as it was before appearance augmentation (no CutMix)."""
    order = torch.randperm(len(x), generator=gen)
    for i in range(0, len(order), cfg.batch_size):
        idx = order[i : i + cfg.batch_size]
        images = normalise(x[idx], mean, std)
        yield (augment(images, cfg, gen) if cfg.augment else images), y[idx]


def appearance_batches(appearance: float, seed: int = 0, augment: bool = False):
    x = torch.as_tensor(scans_with_a_square(32))
    x[:, :3] = 0  # a black band of background
    cfg = TrainConfig(batch_size=16, appearance=appearance, augment=augment, cutmix=0.0)
    gen = torch.Generator().manual_seed(seed)
    return list(epoch_batches(x, torch.arange(32) % 2, cfg, 0.2, 0.2, torch.device("cpu"), gen))


@pytest.mark.parametrize("geometric", [False, True])
def test_without_appearance_batches_and_draws_are_as_they_were(geometric):
    x = torch.as_tensor(scans_with_a_square(32))
    y = torch.arange(32) % 2
    cfg = TrainConfig(batch_size=16, augment=geometric, appearance=0.0, cutmix=0.0)
    gen, reference = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got = list(epoch_batches(x, y, cfg, 0.2, 0.2, torch.device("cpu"), gen))
    want = list(plain_batches(x, y, cfg, 0.2, 0.2, reference))
    for (a, la), (b, lb) in zip(got, want, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert torch.equal(gen.get_state(), reference.get_state())  # nothing more drawn


def test_appearance_batches_stay_in_range_and_are_reproducible():
    plain, changed = appearance_batches(0.0), appearance_batches(1.0)
    low, high = (0 - 0.2) / 0.2, (1 - 0.2) / 0.2  # [0, 1] standardised
    for images, _ in changed:
        assert torch.isfinite(images).all()
        assert images.min() >= low - 1e-5 and images.max() <= high + 1e-5
    # The first batch holds the same images (the order is drawn first): appearance changed them.
    assert not torch.allclose(plain[0][0], changed[0][0])
    again, other = appearance_batches(1.0), appearance_batches(1.0, seed=1)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(changed, again, strict=True))
    assert not torch.allclose(changed[0][0], other[0][0])


def test_appearance_and_geometric_augmentation_combine():
    both, geometric = appearance_batches(1.0, augment=True), appearance_batches(0.0, augment=True)
    assert not torch.allclose(both[0][0], geometric[0][0])
    assert all(torch.isfinite(images).all() for images, _ in both)


def test_prefetching_batches_changes_nothing_but_the_waiting():
    cfg = ViTConfig(**{**PATCH_VIT, "dropout": 0.2})
    runs = []
    for prefetch in (False, True):
        timings = {}
        # Geometric augmentation draws in the background thread too; no CutMix.
        tcfg = TrainConfig(
            epochs=3,
            batch_size=16,
            seed=2,
            prefetch=prefetch,
            augment=True,
            cutmix=0.0,
            label_smoothing=0.0,
        )
        model, history, _ = train(cfg, tcfg, learnable_cache(), timings=timings)
        assert 0 <= timings["data_wait_s"] <= timings["train_s"]
        runs.append((model.state_dict(), history))
    assert runs[0][1].equals(runs[1][1])
    for name, weights in runs[0][0].items():
        assert torch.equal(weights, runs[1][0][name]), name


def test_prefetcher_reraises_errors_from_the_batch_builder():
    def batches():
        yield 1
        raise ValueError("bad batch")

    prefetched = Prefetcher(batches())
    assert next(prefetched) == 1
    with pytest.raises(ValueError, match="bad batch"):
        next(prefetched)


def test_prefetcher_stops_when_training_ends_mid_epoch():
    prefetched = Prefetcher(iter(range(1_000_000)))
    assert next(prefetched) == 0
    prefetched.close()  # the thread is blocked on a full queue: close must still return
    assert not prefetched._thread.is_alive()


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
    x = torch.as_tensor(scans_with_a_square(16))
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
    x = torch.as_tensor(scans_with_a_square(16))
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
    cache = top_edge_cache()
    mixed = TrainConfig(
        epochs=4, cutmix=1.0, batch_size=16, augment=False, label_smoothing=0.0, prefetch=False
    )
    unmixed_end = TrainConfig(**{**mixed.__dict__, "cutmix_off_epochs": 2})
    _, history, _ = train(ViTConfig(**PATCH_VIT), mixed, cache)
    _, history_off, _ = train(ViTConfig(**PATCH_VIT), unmixed_end, cache)
    pd.testing.assert_frame_equal(history[:2], history_off[:2])  # same draws, same weights
    assert not history.train_loss[2:].equals(history_off.train_loss[2:])
