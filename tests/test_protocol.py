"""The protocol's promise: no held-out label is read before scoring. A run trained with the labels
of its held-out fold and of the locked test permuted is byte for byte the run trained without:
the same weights, the same chosen epoch, the same out-of-distribution reference and threshold,
the same temperature.
A permuted training label, by contrast, changes the run (so the check can fail)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from vitct.data.cache import load_cache, save_cache
from vitct.data.partition import assign_folds, locked_test, run_parts
from vitct.model.settings import ViTConfig
from vitct.training.run import train_run
from vitct.training.settings import TrainConfig

SPLIT = {"val": 0.25, "seed": 3, "near_duplicate_threshold": 0.95}
MODEL = ViTConfig(
    image_size=16, patch_size=4, embed_dim=16, depth=1, heads=2, dropout=0.1,
    tokenizer="patch", pooling="cls",
)  # fmt: skip
TRAINING = TrainConfig(
    epochs=3, batch_size=16, warmup_epochs=1, lr=3e-3, augment=True, cutmix=0.5,
    label_smoothing=0.1, device="cpu", prefetch=False,
)  # fmt: skip


def learnable_data(n_groups: int = 60, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """A cache and partition table: groups of 1-3 near-identical scans sharing a label, class 1
    with a brighter square; a locked test split and three folds dealt as the pipeline deals
    them."""
    rng = np.random.default_rng(seed)
    rows, images, thumbnails = [], [], []
    for group in range(n_groups):
        label = group % 2
        base = rng.integers(0, 80, (16, 16))
        for k in range(rng.integers(1, 4)):
            image = np.clip(base + rng.integers(0, 6, (16, 16)), 0, 255).astype(np.uint8)
            if label:
                image[4:12, 4:12] += 100
            images.append(image)
            thumbnails.append(np.kron(image, np.ones((2, 2), np.uint8)))
            rows.append(
                {
                    "path": f"{group}_{k}.png",
                    "label": label,
                    "class_dir": ("non-COVID", "COVID")[label],
                    "near_duplicate_group": group,
                    "sha256": f"{group}_{k}",
                }
            )
    table = pd.DataFrame(rows)
    table["test"] = locked_test(table, 0.2, seed=1, strategy="grouped")
    table["fold"] = assign_folds(table, 3, seed=1)
    x = np.stack(images)
    cache = {
        "x": x,
        "y": table.label.to_numpy(np.int64),
        "paths": table.path.to_numpy(str),
        "thumbnails": np.stack(thumbnails),
        "histograms": np.stack([np.bincount(i.ravel() // 8, minlength=32) / i.size for i in x]),
    }
    return cache, table


def permuted(cache: dict, table: pd.DataFrame, rows: np.ndarray, seed: int = 0):
    """Copies with the labels of `rows` (a boolean mask) shuffled among themselves, until at
    least one of them changed."""
    rng = np.random.default_rng(seed)
    labels = table.label.to_numpy().copy()
    while True:
        shuffled = labels.copy()
        shuffled[rows] = rng.permutation(labels[rows])
        if (shuffled != labels).any():
            break
    new_table = table.assign(label=shuffled, class_dir=np.where(shuffled, "COVID", "non-COVID"))
    return {**cache, "y": shuffled.astype(np.int64)}, new_table


def through_files(tmp_path, cache: dict, table: pd.DataFrame, name: str):
    """The cache and table as the train step reads them: from the files the pipeline writes."""
    save_cache(tmp_path / f"{name}.npz", cache)
    table.to_csv(tmp_path / f"{name}.tsv", sep="\t", index=False)
    return load_cache(tmp_path / f"{name}.npz"), pd.read_csv(
        tmp_path / f"{name}.tsv", sep="\t", keep_default_na=False
    )


def trained(cache: dict, table: pd.DataFrame, fold: str):
    torch.set_num_threads(1)  # the same order of float sums in every run
    run = train_run(cache, table, fold, SPLIT, MODEL, TRAINING)
    return run


def assert_identical(a, b) -> None:
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    assert a.best["epoch"] == b.best["epoch"]
    pd.testing.assert_frame_equal(a.history, b.history)
    assert a.reference.header() == b.reference.header()  # thresholds and their shares
    for name, tensor in a.reference.tensors().items():
        np.testing.assert_array_equal(tensor, b.reference.tensors()[name])
    # the temperature, fitted on the inner validation split alone, and what it did there
    assert a.calibration.header() == b.calibration.header()
    assert (a.mean, a.std, a.images) == (b.mean, b.std, b.images)


@pytest.mark.parametrize("fold", ["fold1", "all"])
def test_permuting_held_out_and_test_labels_leaves_the_run_byte_identical(tmp_path, fold):
    cache, table = learnable_data()
    parts = run_parts(table, fold, SPLIT["val"], SPLIT["seed"])
    unseen = parts.isin(["held_out", "test"]).to_numpy()
    assert unseen.sum() >= 10  # enough held-out and test rows for the permutation to bite
    other_cache, other_table = permuted(cache, table, unseen)
    reference = trained(*through_files(tmp_path, cache, table, "a"), fold)
    again = trained(*through_files(tmp_path, other_cache, other_table, "b"), fold)
    assert_identical(reference, again)


def test_permuting_training_labels_changes_the_run(tmp_path):
    cache, table = learnable_data()
    parts = run_parts(table, "fold1", SPLIT["val"], SPLIT["seed"])
    training = (parts == "train").to_numpy()
    other_cache, other_table = permuted(cache, table, training)
    reference = trained(cache, table, "fold1")
    changed = trained(other_cache, other_table, "fold1")
    state_a, state_b = reference.model.state_dict(), changed.model.state_dict()
    assert any(not torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert reference.calibration.temperature != changed.calibration.temperature
