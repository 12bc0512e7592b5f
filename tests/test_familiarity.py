"""The familiarity reference: about 5% of in-source images flagged, far more from elsewhere."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from vitct.model.inference import predict_with_features
from vitct.model.ood import (
    SET_MIN_SLICES,
    Distance,
    Familiarity,
    fit,
    flagged_share,
    score_and_flag,
    set_is_shifted,
)
from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT


def gaussian(n: int, seed: int, shift: float = 0.0, dim: int = 16) -> np.ndarray:
    """Correlated Gaussian features (a fixed mixing matrix), optionally shifted on every axis."""
    mixing = np.random.default_rng(99).normal(size=(dim, dim)) / np.sqrt(dim)
    return np.random.default_rng(seed).normal(size=(n, dim)) @ mixing + 1.0 + shift


def test_the_threshold_flags_about_5_percent_of_held_in_images():
    reference = fit(gaussian(1000, 0), gaussian(1000, 1))
    assert reference.val_flagged_share == pytest.approx(0.05, abs=0.002)
    assert reference.train_images == 1000
    held_in = reference.flags(reference.score(gaussian(5000, 2)))
    assert flagged_share(held_in) == pytest.approx(0.05, abs=0.02)


def test_features_from_a_shifted_distribution_are_flagged_far_more_often():
    reference = fit(gaussian(1000, 0), gaussian(1000, 1))
    shifted = flagged_share(reference.flags(reference.score(gaussian(1000, 3, shift=1.0))))
    assert shifted > 0.9


def test_a_toy_models_features_tell_another_scanner_apart():
    """An untrained ViT's pooled features already separate dark-background slices (train)
    from bright-background ones (the demo's second scanner has a bright background)."""
    torch.manual_seed(0)
    size = {"image_size": 16, "patch_size": 4, "embed_dim": 16, "depth": 1, "heads": 2}
    model = ViT(ViTConfig(**size, tokenizer="patch", pooling="cls"))
    rng = np.random.default_rng(0)

    def slices(n):
        x = rng.integers(0, 60, (n, 16, 16)).astype(np.uint8)
        x[::2, 4:12, 4:12] += 120  # half have a bright lesion-like square
        return x

    def features(images):
        return predict_with_features(model, images, 0.15, 0.2)[1]

    reference = fit(features(slices(400)), features(slices(200)))
    held_in = flagged_share(reference.flags(reference.score(features(slices(400)))))
    elsewhere = flagged_share(reference.flags(reference.score(features(255 - slices(200)))))
    assert held_in < 0.12 and elsewhere > 0.9


def test_the_score_is_the_mahalanobis_distance():
    reference = Familiarity(Distance(np.zeros(2), np.diag([1.0, 0.25]), 1.5), None, 0.05, 10)
    scores = reference.score(np.array([[3.0, 0.0], [0.0, 4.0]]))
    np.testing.assert_allclose(scores, np.array([3.0, 2.0]) / 1.5)  # distance over threshold


def test_unscored_images_have_no_flag_and_no_reference_flags_nothing():
    reference = Familiarity(Distance(np.zeros(2), np.eye(2), 1.0), None, 0.05, 10)
    flags = reference.flags(np.array([0.5, np.nan, 2.0]))
    assert flags.dtype == "boolean" and flags.tolist() == [False, pd.NA, True]
    assert flagged_share(flags) == 0.5
    scores, none, set_flag = score_and_flag(None, np.zeros((3, 2)))
    assert np.isnan(scores).all() and none.isna().all() and flagged_share(none) is None
    assert set_flag is False


def test_grey_levels_flag_what_the_features_miss_and_both_flag_about_5_percent():
    # Another source whose features look like the training images' (a mask and per-image
    # standardisation make them alike) but whose grey levels as decoded do not.
    rng = np.random.default_rng(3)
    train_f, val_f, other_f = gaussian(800, 0), gaussian(800, 1), gaussian(400, 2)
    grey = lambda n, shift: rng.dirichlet(np.full(32, 20.0), n) + shift  # noqa: E731
    train_g, val_g = grey(800, 0), grey(800, 0)
    other_g = grey(400, 0) + np.r_[np.full(16, 0.01), np.full(16, -0.01)]
    features_only = fit(train_f, val_f)
    both = fit(train_f, val_f, train_g, val_g)
    assert 0.03 <= both.val_flagged_share <= 0.07
    assert flagged_share(features_only.flags(features_only.score(other_f))) < 0.1
    assert flagged_share(both.flags(both.score(other_f, other_g))) > 0.8
    with pytest.raises(ValueError, match="grey histograms"):
        both.score(other_f)


def test_held_in_sets_are_almost_never_flagged_as_a_whole_and_shifted_ones_are():
    reference = fit(gaussian(1000, 0), gaussian(1000, 1))
    held_in, shifted = [], []
    for seed in range(200):  # sets of 20 slices, as a small folder would be
        scores = reference.score(gaussian(20, 10 + seed))
        held_in.append(reference.set_flags(scores)[1])
        half = reference.score(gaussian(20, 1000 + seed, shift=0.6))  # about half flagged
        shifted.append(reference.set_flags(half)[1])
    assert np.mean(held_in) <= 0.01 and np.mean(shifted) >= 0.9


def test_a_set_flagged_as_a_whole_flags_every_scored_image_and_keeps_the_unscored_missing():
    reference = Familiarity(Distance(np.zeros(2), np.eye(2), 1.0), None, 0.05, 10)
    scores = np.r_[np.full(8, 2.0), np.full(12, 0.5), np.nan]  # 8 of 20 scored beyond 1
    flags, shifted = reference.set_flags(scores)
    assert shifted and flags.tolist() == [True] * 20 + [pd.NA]
    few = reference.set_flags(np.r_[np.full(SET_MIN_SLICES - 2, 2.0), 0.5])
    assert not few[1] and few[0].tolist() == [True] * (SET_MIN_SLICES - 2) + [False]


def test_the_set_test_expects_at_least_the_aimed_share_even_if_validation_flagged_none():
    flags = pd.Series([True] * 3 + [False] * 37)  # 7.5%: plausible at 5%, not at 0%
    assert not set_is_shifted(flags, val_share=0.0)
    assert set_is_shifted(pd.Series([True] * 10 + [False] * 30), val_share=0.0)


def test_the_warning_names_the_flagged_images_or_says_the_set_as_a_whole_was_flagged():
    from vitct.prediction.predictor import unfamiliar_warning

    table = pd.DataFrame({"path": ["a.png", "b.png", "c.png"]})
    table["unfamiliar"] = pd.Series([True, False, pd.NA], dtype="boolean")
    assert unfamiliar_warning(table).startswith("1 of 2 images look unlike")
    table["unfamiliar"] = pd.Series([True, True, pd.NA], dtype="boolean")
    table.attrs["set_unfamiliar"] = True
    message = unfamiliar_warning(table)
    assert message.startswith("these 2 images, as a set, look unlike") and "vitct adapt" in message
    table["unfamiliar"] = pd.Series([False, False, pd.NA], dtype="boolean")
    assert unfamiliar_warning(table) is None
