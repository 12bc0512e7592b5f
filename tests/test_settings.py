"""Model and training settings: bad values are refused, and they round-trip through one dict."""

from __future__ import annotations

import pytest

from vitct.model.settings import SettingError, ViTConfig
from vitct.training.settings import TrainConfig


def test_bad_model_settings_are_refused():
    with pytest.raises(ValueError, match="does not divide image_size"):
        ViTConfig(image_size=32, patch_size=12)
    with pytest.raises(ValueError, match="heads 3 does not divide embed_dim 16"):
        ViTConfig(embed_dim=16, heads=3)
    # 12 divides 48, but the conv stem halves the image per stage: it would build a 6x6 grid
    # where the position embeddings expect 4x4, and fail only at the first batch.
    with pytest.raises(ValueError, match="patch_size 12 is not a power of two"):
        ViTConfig(image_size=48, patch_size=12, tokenizer="conv")
    ViTConfig(image_size=48, patch_size=12, tokenizer="patch")  # one strided conv: any divisor


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"mask_ratio": 1.0}, "mask_ratio must be between 0 and 1"),
        ({"mask_ratio": 0.0}, "mask_ratio must be between 0 and 1"),
        ({"cutmix": 1.5}, "cutmix is a share of batches in"),
        ({"cutmix": -0.1}, "cutmix is a share of batches in"),
        ({"epochs": 4, "cutmix_off_epochs": 4}, "cutmix_off_epochs 4 must be at least 0 and"),
        ({"cutmix_off_epochs": -1}, "cutmix_off_epochs -1 must be at least 0 and fewer"),
        ({"appearance": 1.5}, "appearance is a probability in"),
        ({"appearance": -0.1}, "appearance is a probability in"),
    ],
)
def test_bad_pretraining_and_cutmix_settings_are_refused(bad, message):
    with pytest.raises(SettingError, match=message) as refused:
        TrainConfig(**bad)
    assert set(bad) & set(refused.value.keys)  # the error names the key set


@pytest.mark.parametrize("settings_class", [ViTConfig, TrainConfig])
def test_settings_round_trip_through_one_dict_and_ignore_the_other_class_keys(settings_class):
    changed = {"dropout": 0.1} if settings_class is ViTConfig else {"lr": 0.01}
    assert settings_class(**changed) != settings_class()  # not a default value
    both = {**ViTConfig().to_dict(), **TrainConfig().to_dict(), **changed}
    settings = settings_class.from_dict(both)
    assert settings == settings_class(**changed)
    assert settings_class.from_dict(settings.to_dict()) == settings
