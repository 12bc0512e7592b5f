"""Config overlays: a null removes the key the file below set."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import jobs_to_run, tiny_config, write_config

from vitct.pipeline.config_checks import remove_nulled_keys


def test_a_null_removes_the_key_at_any_depth():
    config = {
        "ablation": {"variants": {"keep": {"augment": False}, "drop": None}},
        "final": {"overrides": {"depth": None, "epochs": 3}},
        "dataset": None,
    }
    remove_nulled_keys(config)
    assert config == {
        "ablation": {"variants": {"keep": {"augment": False}}},
        "final": {"overrides": {"epochs": 3}},
    }


@pytest.mark.slow
def test_an_overlay_null_drops_a_variant_from_the_run(tmp_path: Path):
    def trainings(config) -> int:
        write_config(tmp_path, config)
        return jobs_to_run(tmp_path)["train"]

    without_variants = trainings(tiny_config(ablation={"variants": {}}))
    base = tiny_config(ablation={"variants": {"plain": {"augment": False}, "flat": {"lr": 0.01}}})
    assert trainings(base) == without_variants + 2  # one run per variant
    base["ablation"]["variants"]["flat"] = None  # what a merged overlay's `flat: null` leaves
    assert trainings(base) == without_variants + 1
