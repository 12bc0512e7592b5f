"""The plan: which runs a config asks for, and each run's settings, choice and pretraining."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import REPO
from PIL import Image
from snakemake.utils import validate

from vitct.data.synthetic import generate
from vitct.pipeline.plan import (
    DATASET,
    Plan,
    Run,
    combination_name,
    dataset_spec,
    pretraining_settings,
    step_settings,
)

SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
GRID = {"patch_size": [8, 16], "heads": [1, 2]}
NAMES = ["patch_size~8_heads~1", "patch_size~8_heads~2", "patch_size~16_heads~1"]
NAMES.append("patch_size~16_heads~2")


def config(**sections) -> dict:
    """A config with these sections (a small grid, two folds and seeds, no variants unless
    given), every other key the schema's default."""
    cfg = {
        "sweep": {"grid": GRID},
        "evaluation": {"folds": 2, "seeds": [0, 1]},
        "ablation": {"variants": {}},
    }
    for section, values in copy.deepcopy(sections).items():
        cfg[section] = {**cfg.get(section, {}), **values}
    validate(cfg, SCHEMA)  # fills in the defaults
    return cfg


def plan(**sections) -> Plan:
    return Plan(config(**sections))


# --- the runs ---------------------------------------------------------------------------------


def test_a_nested_sweep_trains_the_grid_in_every_fold():
    p = plan(sweep={"nested": True})
    assert p.nested and list(p.grid) == NAMES
    runs = p.sweep_runs()
    assert len(runs) == 8 and {r.fold for r in runs} == {"fold0", "fold1"}
    assert {r.seed for r in runs} == {0}  # the training seed, not evaluation.seeds
    assert [r.recipe for r in runs if r.fold == "fold1"] == NAMES


def test_a_flat_sweep_or_one_without_folds_trains_the_grid_once_on_all():
    for p in (
        plan(sweep={"nested": False}),
        plan(sweep={"nested": True}, evaluation={"folds": 0}),
    ):
        assert not p.nested
        assert p.sweep_runs() == [Run(name, "all", 0) for name in NAMES]


def test_choice_runs_are_the_folds_own_grid_runs_or_every_folds_for_the_shipped_model():
    nested = plan(sweep={"nested": True}, training={"seed": 5})
    assert nested.choice_runs("fold1") == [Run(name, "fold1", 5) for name in NAMES]
    assert nested.choice_runs("all") == nested.sweep_runs()
    assert len(nested.choice_runs("all")) == 8
    flat = plan(sweep={"nested": False})
    assert flat.choice_runs("fold1") == flat.choice_runs("all") == flat.sweep_runs()


def test_the_final_runs_are_the_shipped_model_then_every_fold_and_seed():
    p = plan(training={"seed": 3}, evaluation={"folds": 2, "seeds": [0, 1]})
    assert p.shipped() == Run("final", "all", 3)
    assert p.final_runs() == [
        Run("final", "all", 3),
        Run("final", "fold0", 0),
        Run("final", "fold0", 1),
        Run("final", "fold1", 0),
        Run("final", "fold1", 1),
    ]
    assert p.run_folds() == ["all", "fold0", "fold1"]
    assert plan(evaluation={"folds": 0}).final_runs() == [Run("final", "all", 0)]
    assert Run("final", "fold1", 2).folder("out") == "out/runs/final/fold1/seed2"


VARIANTS = {"no_cutmix": {"cutmix": 0.0}, "other_seed": {"seed": 7}}


def test_variants_run_once_on_all_each_with_its_own_seed_when_it_sets_one():
    p = plan(ablation={"variants": VARIANTS, "cross_validate": False})
    assert p.variant_runs() == [Run("no_cutmix", "all", 0), Run("other_seed", "all", 7)]
    assert p.run_changes(Run("other_seed", "all", 7))["seed"] == 7


def test_cross_validated_variants_run_on_every_fold_and_seed_when_there_are_folds():
    p = plan(ablation={"variants": VARIANTS, "cross_validate": True})
    runs = p.variant_runs()
    assert len(runs) == 8
    assert runs[:4] == [Run("no_cutmix", f, s) for f in ("fold0", "fold1") for s in (0, 1)]
    without_folds = plan(
        ablation={"variants": VARIANTS, "cross_validate": True}, evaluation={"folds": 0}
    )
    assert without_folds.variant_runs() == [
        Run("no_cutmix", "all", 0),
        Run("other_seed", "all", 7),
    ]


def test_every_run_is_the_sweep_then_the_scored_runs():
    p = plan(ablation={"variants": VARIANTS})
    assert p.runs() == [*p.sweep_runs(), *p.final_runs(), *p.variant_runs()]
    assert p.scored_runs() == [*p.final_runs(), *p.variant_runs()]


def test_trainings_count_each_kind_and_each_shared_pretraining_once():
    p = plan(
        final={"overrides": {"epochs": 30, "pretrain_epochs": 5}},
        ablation={"variants": {"no_smoothing": {"label_smoothing": 0.0}, "deeper": {"depth": 6}}},
    )
    # The variants run on all: no_smoothing shares the shipped model's pretraining, deeper
    # pretrains for itself, and the four fold runs each pretrain.
    assert p.trainings() == {
        "sweep": 8, "final": 5, "variants": 2, "adaptations": 0, "pretrainings": 6
    }  # fmt: skip
    none = plan(final={"overrides": {"epochs": 30, "pretrain_epochs": 0}})
    assert none.trainings() == {
        "sweep": 8, "final": 5, "variants": 0, "adaptations": 0, "pretrainings": 0
    }  # fmt: skip


# --- what each run changes ------------------------------------------------------------------


def test_each_recipe_changes_its_own_settings():
    p = plan(
        final={"overrides": {"depth": 8, "epochs": 60}},
        ablation={"variants": {"shallow": {"depth": 2, "augment": True}}},
    )
    assert p.changes("patch_size~16_heads~1") == {"patch_size": 16, "heads": 1}
    assert p.changes("final") == {"depth": 8, "epochs": 60}
    assert p.changes("shallow") == {"depth": 2, "epochs": 60, "augment": True}
    assert not p.tuned("patch_size~8_heads~1") and p.tuned("final") and p.tuned("shallow")
    with pytest.raises(ValueError, match="no recipe 'nope'.*shallow"):
        p.changes("nope")


def test_a_runs_changes_are_the_choice_then_the_recipes_changes_then_its_seed():
    p = plan(
        final={"overrides": {"depth": 8, "epochs": 60}},
        ablation={"variants": {"shallow": {"depth": 2}}},
    )
    chosen = {"patch_size": 8, "heads": 2}
    changes = p.run_changes(Run("shallow", "fold1", 1), chosen)
    assert list(changes.items()) == [
        ("patch_size", 8),
        ("heads", 2),
        ("depth", 2),
        ("epochs", 60),
        ("seed", 1),
    ]
    model, training = p.settings(Run("final", "fold0", 1), chosen)
    assert (model["patch_size"], model["heads"], model["depth"]) == (8, 2, 8)
    assert (training["epochs"], training["seed"]) == (60, 1)
    # Before the choice (the start-up estimate), swept keys keep the config's values.
    model, _ = p.settings(Run("final", "all", 0))
    assert (model["patch_size"], model["heads"]) == (16, 4)


def test_a_variant_may_see_other_images_than_the_final_recipe():
    p = plan(
        preprocess={"image_size": 64, "mask": "lungs", "intensity": "standardise"},
        ablation={"variants": {"big": {"image_size": 128, "mask": "none"}, "raw": {"lr": 0.01}}},
    )
    assert p.preprocessing("final") == {"size": 64, "mask": "lungs", "intensity": "standardise"}
    assert p.preprocessing("big") == {"size": 128, "mask": "none", "intensity": "standardise"}
    assert p.preprocessing("raw") == p.preprocessing("final")
    assert p.preprocessing("patch_size~8_heads~1") == p.preprocessing("final")
    model, training = p.settings(Run("big", "all", 0))
    assert model["image_size"] == 128 and "image_size" not in training


# --- shared pretraining -----------------------------------------------------------------------

PRETRAINING = {"overrides": {"epochs": 30, "pretrain_epochs": 5}}
ABLATION = {
    "variants": {
        "no_smoothing": {"label_smoothing": 0.0},
        "deeper": {"depth": 6},
        "faster": {"lr": 0.01},
        "no_pretraining": {"pretrain_epochs": 0},
    }
}


def test_the_final_recipe_owns_its_pretraining_and_grid_runs_pretrain_inside_their_training():
    p = plan(final=PRETRAINING, ablation=ABLATION)
    assert p.pretraining_owner(Run("final", "fold1", 1)) == Run("final", "fold1", 1)
    assert p.pretraining_owner(Run("patch_size~8_heads~1", "fold0", 0)) is None


def test_a_variant_that_leaves_pretraining_alone_shares_the_final_recipes():
    p = plan(final=PRETRAINING, ablation=ABLATION)
    assert p.pretraining_owner(Run("no_smoothing", "all", 0)) == Run("final", "all", 0)
    assert p.pretraining_owner(Run("no_smoothing", "fold1", 1)) == Run("final", "fold1", 1)


@pytest.mark.parametrize("variant", ["deeper", "faster"])
def test_a_variant_that_changes_the_model_or_a_pretraining_setting_owns_its_own(variant):
    p = plan(final=PRETRAINING, ablation=ABLATION)
    assert p.pretraining_owner(Run(variant, "all", 0)) == Run(variant, "all", 0)


def test_no_pretraining_no_owner():
    p = plan(final=PRETRAINING, ablation=ABLATION)
    assert p.pretraining_owner(Run("no_pretraining", "all", 0)) is None
    without = plan(final={"overrides": {"epochs": 30, "pretrain_epochs": 0}}, ablation=ABLATION)
    assert without.pretraining_owner(Run("final", "all", 0)) is None
    assert without.pretraining_owner(Run("no_smoothing", "all", 0)) is None


def test_a_swept_pretraining_is_left_to_each_training_job_unless_a_variant_sets_it():
    p = plan(
        sweep={"grid": {"heads": [1, 2], "pretrain_epochs": [0, 5]}},
        final={"overrides": {"epochs": 30}},
        ablation={
            "variants": {"no_smoothing": {"label_smoothing": 0.0}, "pre": {"pretrain_epochs": 3}}
        },
    )
    # Only the choice says whether final pretrains: its training job decides.
    assert p.pretraining_owner(Run("final", "all", 0)) is None
    assert p.pretraining_owner(Run("no_smoothing", "all", 0)) is None
    assert p.pretraining_owner(Run("pre", "all", 0)) == Run("pre", "all", 0)


def test_pretraining_settings_keep_only_what_shapes_the_pretraining():
    cfg = config()
    settings = pretraining_settings(cfg, {"depth": 6, "label_smoothing": 0.0, "lr": 0.01})
    assert settings["changes"] == {"depth": 6, "lr": 0.01}
    assert "label_smoothing" not in settings["sections"]["training"]
    assert settings["sections"]["training"]["pretrain_epochs"] == 0
    assert settings["sections"]["model"] == cfg["model"]


# --- names, data sets, a step's settings --------------------------------------------------------


def test_a_combination_is_named_by_its_values_in_grid_order():
    assert combination_name({"patch_size": 8, "dropout": 0.1}) == "patch_size~8_dropout~0.1"
    assert combination_name({"dropout": 0.1, "patch_size": 8}) == "dropout~0.1_patch_size~8"


def test_dataset_spec_of_the_source_a_demo_scanner_and_a_folder():
    cfg = config(
        dataset={"source": "demo", "demo": {"n_per_class": 10, "seed": 3}},
        evaluation={"external": {"scanner_b": "demo:b", "hospital": "/data/hospital"}},
    )
    source = dataset_spec(cfg, DATASET)
    assert source == {k: v for k, v in cfg["dataset"].items() if k not in ("name", "sources")}
    cfg["dataset"]["sources"] = {"other": "demo:c"}  # a further source: this one's unchanged
    assert dataset_spec(cfg, DATASET) == source
    demo = dataset_spec(cfg, "scanner_b")
    assert demo["source"] == "demo" and demo["setting"] == "evaluation.external.scanner_b"
    # The other scanner renders other slices: the next generator seed.
    assert demo["demo"] == {"n_per_class": 10, "seed": 4, "scanner": "b", "format": "png"}
    assert cfg["dataset"]["demo"]["seed"] == 3  # the source's own is untouched
    # A DICOM demo's scanner b is still a PNG export; a further scanner a is DICOM as its own
    cfg["dataset"]["demo"]["format"] = "dicom"
    cfg["dataset"]["sources"] = {"more": "demo:a"}
    assert dataset_spec(cfg, "scanner_b")["demo"]["format"] == "png"
    assert dataset_spec(cfg, "more")["demo"]["format"] == "dicom"
    del cfg["dataset"]["demo"]["format"]
    folder = dataset_spec(cfg, "hospital")
    assert folder["source"] == "local" and folder["path"] == "/data/hospital"
    assert folder["expected_counts"] is None and "demo" not in folder
    assert folder["max_extract_mb"] == cfg["dataset"]["max_extract_mb"]
    assert plan(**{"evaluation": cfg["evaluation"]}).data_sets() == [
        DATASET,
        "scanner_b",
        "hospital",
    ]


def test_the_demo_scanner_b_renders_the_demos_slices_as_another_source_would(tmp_path):
    generate(tmp_path / "a", 2, seed=5, progress=False)
    generate(tmp_path / "b", 2, seed=5, progress=False, scanner="b")
    for name in ("Covid (1).png", "Covid (2).png"):
        a = Image.open(tmp_path / "a" / "COVID" / name).convert("L")
        b = Image.open(tmp_path / "b" / "COVID" / name).convert("L")
        assert b.width < 0.7 * a.width and b.height < 0.7 * a.height  # lower resolution, crop
        corner_a, corner_b = np.asarray(a)[:3, :3].mean(), np.asarray(b)[:3, :3].mean()
        assert corner_a < 40 < 150 < corner_b  # a dark background against a bright one
    with pytest.raises(ValueError, match="scanner must be one of"):
        generate(tmp_path / "c", 1, seed=0, progress=False, scanner="c")


def choice_file(tmp_path, fold, patch, heads, mcc) -> str:
    path = tmp_path / f"{fold}_{patch}_{heads}.json"
    metrics = {
        "recipe": combination_name({"patch_size": patch, "heads": heads}),
        "fold": fold,
        "seed": 0,
        "changes": {"patch_size": patch, "heads": heads},
        "best_epoch": 2,
        "parameters": 1000 * patch,
        "images": {"train": 80, "val": 20},
        "val_mcc": mcc,
        "val_loss": 0.4,
    }
    path.write_text(json.dumps(metrics))
    return str(path)


def test_a_tuned_runs_step_builds_on_the_combination_its_choice_runs_chose(tmp_path):
    cfg = config(
        preprocess={"image_size": 64, "mask": "none", "intensity": "raw"},
        final={"overrides": {"depth": 6, "epochs": 30}},
    )
    p, run = Plan(cfg), Run("final", "fold1", 1)
    scores = {(8, 1): 0.6, (8, 2): 0.7, (16, 1): 0.9, (16, 2): 0.5}
    choice = [choice_file(tmp_path, "fold1", *key, mcc) for key, mcc in scores.items()]
    params = {
        "sections": {key: cfg[key] for key in ("model", "training", "preprocess")},
        "changes": p.run_changes(run),
        "tuned": True,
        "grid": list(GRID),
        "metric": "mcc",
    }
    model, training, preprocessing, chosen = step_settings(params, choice)
    assert chosen["params"] == {"patch_size": 16, "heads": 1}
    assert chosen["chosen_on"] == ["fold1"] and chosen["chosen_on_images"] == 20  # the split once
    assert (model.patch_size, model.heads, model.depth, model.image_size) == (16, 1, 6, 64)
    assert (training.epochs, training.seed) == (30, 1)
    assert preprocessing == {"image_size": 64, "mask": "none", "intensity": "raw"}


def test_a_grid_runs_step_takes_its_own_values_and_no_choice():
    cfg = config()
    p, run = Plan(cfg), Run("patch_size~8_heads~2", "fold0", 0)
    params = {
        "sections": {key: cfg[key] for key in ("model", "training", "preprocess")},
        "changes": p.run_changes(run),
        "tuned": False,
        "grid": list(GRID),
        "metric": "mcc",
    }
    model, training, _, chosen = step_settings(params, [])
    assert chosen is None
    assert (model.patch_size, model.heads, training.epochs) == (8, 2, cfg["training"]["epochs"])
