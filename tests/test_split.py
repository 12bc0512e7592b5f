"""The train/val/test split: stratified, seeded, duplicates and groups kept on one side, and a
split too small for its fractions stops the run with the numbers."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import SPLIT_FRACTIONS, snakemake, tiny_config

from vitct.split import SplitError, assign_splits, check_split


def manifest_of(covid: int, non_covid: int) -> pd.DataFrame:
    """One row per distinct image (its own sha256), as build_manifest gives."""
    classes = ["COVID"] * covid + ["non-COVID"] * non_covid
    return pd.DataFrame(
        {
            "path": [f"{c}/{i}.png" for i, c in enumerate(classes)],
            "class_dir": classes,
            "label": [int(c == "COVID") for c in classes],
            "sha256": [f"{i:064x}" for i in range(len(classes))],
        }
    )


def checked(manifest: pd.DataFrame, fractions: dict, seed: int = 0) -> None:
    split = assign_splits(manifest, fractions, seed)
    check_split(manifest, split, fractions, seed, "sha256")


def test_fractions_that_fill_every_split_pass():
    checked(manifest_of(40, 40), {"train": 0.6, "val": 0.2, "test": 0.2})


def test_an_empty_test_split_names_the_numbers_and_the_fraction_that_fills_it():
    manifest = manifest_of(40, 40)
    with pytest.raises(SplitError) as stopped:
        checked(manifest, {"train": 0.79, "val": 0.2, "test": 0.01})
    message = str(stopped.value)
    assert "0 COVID images in the test split" in message
    assert "test 0 COVID, 0 non-COVID" in message  # every split's numbers
    assert "split.fractions.test 0.01 is too small for 40 COVID images" in message
    # The advice is a change that works: the least one, taken from the largest split.
    assert "set split.fractions.test: 0.02 and split.fractions.train: 0.78" in message
    checked(manifest, {"train": 0.78, "val": 0.2, "test": 0.02})


def test_a_class_too_small_for_three_splits_asks_for_images():
    with pytest.raises(SplitError, match="only 2 usable non-COVID images.*add images"):
        checked(manifest_of(40, 2), {"train": 0.6, "val": 0.2, "test": 0.2})


def test_an_empty_validation_class_is_found_too():
    with pytest.raises(SplitError, match="in the val split.*split.fractions.val 0.01"):
        checked(manifest_of(30, 30), {"train": 0.7, "val": 0.01, "test": 0.29})


@pytest.mark.slow
def test_the_run_stops_at_the_split_step(tmp_path):
    config = tiny_config(
        dataset={"source": "demo", "demo": {"n_per_class": 40, "seed": 3}},
        split={"fractions": {"train": 0.79, "val": 0.2, "test": 0.01}, "seed": 1},
    )
    proc = snakemake(tmp_path, config=config, check=False)
    assert proc.returncode != 0
    console = proc.stdout + proc.stderr
    assert "vitct: rule 'split_manifest' failed: SplitError: split strategy random:" in console
    assert "split.fractions.test 0.01 is too small" in console and "Traceback" not in console
    assert not (tmp_path / "results/sweep").exists()  # no training started


def test_exact_duplicates_never_straddle_splits():
    rows = [{"path": f"{i}.png", "label": i // 4 % 2, "sha256": f"h{i // 4}"} for i in range(200)]
    manifest = pd.DataFrame(rows)
    for seed in range(5):
        split = assign_splits(manifest, {"train": 0.6, "val": 0.2, "test": 0.2}, seed)
        assert (manifest.assign(split=split).groupby("sha256").split.nunique() == 1).all()


def test_split_is_stratified_seeded_and_close_to_the_fractions():
    manifest = pd.DataFrame(
        {
            "path": [f"{i}" for i in range(1000)],
            "label": [i % 2 for i in range(1000)],
            "sha256": [f"h{i}" for i in range(1000)],
        }
    )
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    a = assign_splits(manifest, fractions, 1)
    assert a.equals(assign_splits(manifest, fractions, 1))
    assert not a.equals(assign_splits(manifest, fractions, 2))
    counts = pd.crosstab(a, manifest.label)
    assert (counts.loc["train"] == 350).all() and (counts.loc["test"] == 75).all()


def test_grouped_split_keeps_stratification_roughly():
    rows = [{"path": str(i), "label": i % 2, "group": i // 3} for i in range(600)]
    manifest = pd.DataFrame(rows)
    manifest["label"] = manifest.group % 2  # groups share a label
    split = assign_splits(manifest, SPLIT_FRACTIONS, 0, group_column="group")
    counts = pd.crosstab(split, manifest.label)
    assert (abs(counts.loc["train"] - 180) <= 3).all()
