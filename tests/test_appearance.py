"""Appearance augmentation: random grey levels, background, resolution, blur, noise and JPEG per
image, so that global grey levels stop telling the two classes apart."""

from __future__ import annotations

import pytest
import torch

from vitct.training.appearance import appearance_augment, blur
from vitct.training.settings import TrainConfig

ON = TrainConfig(appearance=1.0)


def constant_histogram_images(n: int, mean: float, size: int = 32, seed: int = 0):
    """n images that are each a shuffle of one set of grey levels (uniform around `mean`, width
    0.5): every image of the group has the same histogram, only the pixels' places differ."""
    gen = torch.Generator().manual_seed(seed)
    levels = torch.linspace(mean - 0.25, mean + 0.25, size * size)
    order = torch.rand(n, size * size, generator=gen).argsort(1)
    return levels[order].view(n, 1, size, size)


def best_threshold_accuracy(a: torch.Tensor, b: torch.Tensor) -> float:
    """Accuracy of the best threshold on a single number telling group a from group b."""
    values = torch.cat([a, b])
    labels = torch.cat([torch.zeros(len(a)), torch.ones(len(b))])
    best = 0.0
    for t in values:
        accuracy = ((values > t).float() == labels).float().mean().item()
        best = max(best, accuracy, 1 - accuracy)
    return best


def test_the_mean_grey_of_an_image_no_longer_tells_its_group():
    darker, brighter = constant_histogram_images(300, 0.45), constant_histogram_images(300, 0.55)
    mean = lambda x: x.mean(dim=(1, 2, 3))  # noqa: E731
    assert best_threshold_accuracy(mean(darker), mean(brighter)) == 1.0  # before: all of it
    gen = torch.Generator().manual_seed(0)
    darker, brighter = appearance_augment(darker, ON, gen), appearance_augment(brighter, ON, gen)
    # Measured 0.73 to 0.76 over seeds: the images no tone op touched (1 in 8) still separate.
    assert best_threshold_accuracy(mean(darker), mean(brighter)) < 0.8


def test_only_the_picked_share_of_images_changes():
    x = constant_histogram_images(200, 0.5)
    out = appearance_augment(x, TrainConfig(appearance=0.5), torch.Generator().manual_seed(0))
    changed = torch.tensor([not torch.equal(a, b) for a, b in zip(x, out, strict=True)])
    # Picked images with none of the ops drawn (1 in 256) stay as they were too.
    assert 0.4 < changed.float().mean() < 0.6


def test_backgrounds_turn_black_or_white():
    x = torch.full((64, 1, 32, 32), 0.5)
    x[..., :8, :] = 0.0  # air above the body: the darkest grey
    out = appearance_augment(x, ON, torch.Generator().manual_seed(0))
    air = out[..., 2:6, 4:-4].mean(dim=(1, 2, 3))  # inside the air, away from blurred edges
    assert (air > 0.9).sum() >= 5  # white in about a quarter of the images
    assert (air < 0.1).sum() >= 20  # black: as it was, or set so
    assert out.min() >= 0 and out.max() <= 1


def test_blur_keeps_the_grey_levels_and_smooths_only_where_asked():
    x = constant_histogram_images(3, 0.5)
    out = blur(x, torch.tensor([0.0, 0.2, 1.0]))
    assert torch.equal(out[:2], x[:2])  # sigma 0, and one too small to matter: untouched
    assert out[2].std() < x[2].std() / 2
    assert out[2].mean().item() == pytest.approx(x[2].mean().item(), abs=0.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_same_draws_on_cuda_as_on_the_cpu():
    x = constant_histogram_images(16, 0.5)
    cpu = appearance_augment(x, ON, torch.Generator().manual_seed(0))
    cuda = appearance_augment(x.cuda(), ON, torch.Generator().manual_seed(0))
    assert cuda.is_cuda
    # Same parameters; JPEG rounds 8-bit greys the kernels may place one level apart.
    assert (cuda.cpu() - cpu).abs().mean() < 0.01
