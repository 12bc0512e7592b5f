"""Config overlays: a null removes the key the file below set."""

from __future__ import annotations

from pathlib import Path

from conftest import jobs_to_run, tiny_config, write_config

from vitct.overlays import remove_nulled_keys


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


def test_an_overlay_null_drops_a_variant_from_the_run(tmp_path: Path):
    base = tiny_config(ablation={"variants": {"plain": {"augment": False}, "flat": {"lr": 0.01}}})
    write_config(tmp_path, base)
    assert jobs_to_run(tmp_path)["train_ablation"] == 2
    base["ablation"]["variants"]["flat"] = None  # what a merged overlay's `flat: null` leaves
    write_config(tmp_path, base)
    assert jobs_to_run(tmp_path)["train_ablation"] == 1
