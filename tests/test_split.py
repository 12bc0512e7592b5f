"""A split or class left empty by split.fractions stops the run at the split step, with the
numbers and the fraction to change, not at evaluation after the whole sweep."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import snakemake, tiny_config

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
