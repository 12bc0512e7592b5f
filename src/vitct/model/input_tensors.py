"""Model input as tensors: uint8 images to floats standardised with the training images'
statistics (the mean and std a model file records)."""

from __future__ import annotations

import torch


def unit_range(images):
    """uint8 (N, H, W) -> float (N, 1, H, W) in [0, 1]."""
    return torch.as_tensor(images).float().div_(255.0).unsqueeze(1)


def standardise(x01, mean: float, std: float):
    """Images in [0, 1] -> standardised with the training set's statistics (in place)."""
    return x01.sub_(mean).div_(std)


def normalise(images, mean: float, std: float):
    """uint8 (N, H, W) -> float (N, 1, H, W) standardised with the training set's statistics."""
    return standardise(unit_range(images), mean, std)
