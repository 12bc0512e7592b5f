"""Bad config values stop the run before any job, with a message that names the key; one source
of truth for every default; each config's number of trainings as config/README.md states it;
which ablation variants share the final recipe's pretraining."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_CONFIG, snakemake, tiny_config

from vitct.model.settings import ViTConfig
from vitct.pipeline.config_checks import (
    ConfigError,
    check,
    remove_nulled_keys,
    schema_problems,
    type_command_line_text,
    validate_config,
)
from vitct.pipeline.plan import Plan, shares_final_pretraining
from vitct.training.settings import TrainConfig

SCHEMA_PATH = str(REPO / "workflow/schemas/config.schema.yaml")
SCHEMA = yaml.safe_load(Path(SCHEMA_PATH).read_text())

BAD_CONFIGS = {
    "unknown key": (tiny_config(training={"epoch": 3}), "training.epoch: unknown key"),
    "unknown section": (tiny_config(trainnig={"epochs": 3}), "trainnig: unknown key"),
    "wrong type": (
        tiny_config(training={"epochs": "ten"}),
        "training.epochs: 'ten' is not of type",
    ),
    "negative epochs": (tiny_config(training={"epochs": -1}), "training.epochs: -1 is less than"),
    "patch does not divide image": (
        tiny_config(sweep={"grid": {"patch_size": [8, 12]}}),
        "sweep.grid.patch_size: patch_size 12 does not divide image_size 32",
    ),
    "base patch does not divide image": (
        tiny_config(model={"patch_size": 5}, sweep={"grid": {"heads": [1, 2]}}),
        "model.patch_size: patch_size 5 does not divide image_size 32",
    ),
    "test and validation shares leave no training images": (
        tiny_config(split={"test": 0.5, "val": 0.5}),
        "split.test (0.5) and split.val (0.5) leave no training images",
    ),
    "a seed in the grid": (
        tiny_config(sweep={"grid": {"seed": [0, 1]}}),
        "sweep.grid.seed: runs take their seeds from training.seed",
    ),
    "a seed in a cross-validated variant": (
        tiny_config(
            evaluation={"folds": 2, "seeds": [0]},
            ablation={"cross_validate": True, "variants": {"other": {"seed": 1}}},
        ),
        "ablation.variants.other.seed: the variants train on the folds' seeds",
    ),
    "a variant named as the final recipe": (
        tiny_config(ablation={"variants": {"final": {"augment": False}}}),
        "ablation.variants.final: 'final' is the final recipe's own name",
    ),
    "an external set named as the training source's folder": (
        tiny_config(evaluation={"external": {"dataset": "demo:b"}}),
        "evaluation.external.dataset: 'dataset' names a folder or source of the pipeline's own",
    ),
    "grid key that is no setting": (
        tiny_config(sweep={"grid": {"patchsize": [8]}}),
        "sweep.grid.patchsize is not a model or training setting",
    ),
    "grid value out of range": (
        tiny_config(sweep={"grid": {"dropout": [0.1, 1.5]}}),
        "sweep.grid.dropout: 1.5 is greater than the maximum",
    ),
    "ablation variant with a setting that does not exist": (
        tiny_config(ablation={"variants": {"no_aug": {"augmnet": False}}}),
        "ablation.variants.no_aug.augmnet is not a model or training setting",
    ),
    "ablation variant with an out-of-range value": (
        tiny_config(ablation={"variants": {"smooth": {"label_smoothing": 0.9}}}),
        "ablation.variants.smooth.label_smoothing: 0.9 is greater than the maximum",
    ),
    "ablation variant name that is no folder name": (
        tiny_config(ablation={"variants": {"a/b": {"augment": False}}}),
        "ablation.variants: 'a/b' does not match",
    ),
    "ablation variant that changes nothing": (
        tiny_config(ablation={"variants": {"same": {}}}),
        "ablation.variants.same: {} should be non-empty",
    ),
    "image size in the sweep grid": (
        tiny_config(sweep={"grid": {"image_size": [32, 64]}}),
        "sweep.grid.image_size: preprocessing cannot be swept",
    ),
    "mask in the sweep grid": (
        tiny_config(sweep={"grid": {"mask": ["none", "lungs"]}}),
        "sweep.grid.mask: preprocessing cannot be swept",
    ),
    "mask that does not exist": (
        tiny_config(preprocess={"image_size": 32, "mask": "lung"}),
        "preprocess.mask: 'lung' is not one of",
    ),
    "ablation variant with an intensity that does not exist": (
        tiny_config(ablation={"variants": {"flat": {"intensity": "flat"}}}),
        "ablation.variants.flat.intensity: 'flat' is not one of",
    ),
    "demo external set of a scanner that does not exist": (
        tiny_config(evaluation={"external": {"other": "demo:c"}}),
        "evaluation.external.other: 'demo:c' names no demo scanner",
    ),
    "final image size below the minimum": (
        tiny_config(final={"overrides": {"image_size": 4}}),
        "final.overrides.image_size: 4 is less than the minimum of 8",
    ),
    "final image size the swept patches do not divide": (
        tiny_config(final={"overrides": {"image_size": 40}}),
        "patch_size 16 does not divide image_size 40",
    ),
    "conv tokenizer with a patch that is no power of two": (
        tiny_config(
            sweep={"grid": {"heads": [1, 2]}},
            final={"overrides": {"image_size": 48, "patch_size": 12, "tokenizer": "conv"}},
        ),
        "final.overrides.patch_size: patch_size 12 is not a power of two",
    ),
    "pretraining with a patch as large as the image": (
        tiny_config(training={"pretrain_epochs": 1}, sweep={"grid": {"patch_size": [16, 32]}}),
        "sweep.grid.patch_size: patch_size 32 makes one patch of the 32 px image",
    ),
    "pretraining that hides every patch": (
        tiny_config(training={"mask_ratio": 1.0}),
        "training.mask_ratio: 1.0 is greater than or equal to the maximum of 1",
    ),
    "cutmix share above 1": (
        tiny_config(final={"overrides": {"cutmix": 2}}),
        "final.overrides.cutmix: 2 is greater than the maximum of 1",
    ),
    "cutmix switched off for every epoch": (
        tiny_config(final={"overrides": {"epochs": 4, "cutmix": 1.0, "cutmix_off_epochs": 4}}),
        "final.overrides.cutmix_off_epochs: cutmix_off_epochs 4 must be at least 0 and fewer "
        "than epochs (4); to train without CutMix at all, set cutmix: 0",
    ),
    "an ablation variant's fewer epochs than its unmixed ones": (
        tiny_config(
            final={"overrides": {"epochs": 6, "cutmix": 1.0, "cutmix_off_epochs": 3}},
            ablation={"variants": {"short": {"epochs": 2}}},
        ),
        # The variant set epochs, not cutmix_off_epochs (final.overrides did): name its key.
        "ablation.variants.short.epochs: cutmix_off_epochs 3 must be at least 0 and "
        "fewer than epochs (2)",
    ),
    "an adaptation site that is no external set": (
        tiny_config(adaptation={"site": "ucsd"}),
        "adaptation.site: 'ucsd' is no external set",
    ),
    "the adaptation pool trained on and drawn from": (
        tiny_config(
            evaluation={"external": {"b": "demo:b"}},
            adaptation={"site": "b", "train_on_pool": True},
        ),
        "adaptation.train_on_pool: the whole adaptation pool is then training data",
    ),
    "a training source named as an external set": (
        tiny_config(
            dataset={"source": "demo", "sources": {"b": "demo:b"}},
            evaluation={"external": {"b": "demo:b"}},
        ),
        "dataset.sources.b: 'b' is an external set's name too",
    ),
    "a training source that does not exist": (
        tiny_config(dataset={"source": "demo", "sources": {"other": "/no/such/folder"}}),
        "dataset.sources.other: '/no/such/folder' does not exist",
    ),
    "unknown data source": (tiny_config(dataset={"source": "ftp"}), "dataset.source: 'ftp'"),
    "local source without a path": (
        tiny_config(dataset={"source": "local"}),
        "dataset.path must name a folder or zip",
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_bad_config_is_refused_naming_the_key(case):
    config, message = BAD_CONFIGS[case]
    with pytest.raises(ConfigError) as refused:
        validate_config(copy.deepcopy(config), SCHEMA, SCHEMA_PATH)  # what common.smk runs
    assert message in str(refused.value)


def test_a_bad_config_stops_the_workflow_before_any_job(tmp_path: Path):
    proc = snakemake(tmp_path, config=tiny_config(training={"epochs": "ten"}), check=False)
    assert proc.returncode != 0
    assert "invalid config: \n  training.epochs: 'ten' is not of type" in proc.stderr
    assert not (tmp_path / "results").exists()  # no job ran


def assert_valid(config: dict, name: str = "") -> None:
    """What a run checks before any job: the schema, then the cross-key checks."""
    assert schema_problems(config, SCHEMA) == [], name
    validate_config(config, SCHEMA, SCHEMA_PATH)  # e.g. patch sizes that divide every variant's


# Each shipped command's --configfile list (config/README.md), merged in order as Snakemake does.
SHIPPED_COMMANDS = [
    ["config.yaml"],
    ["demo.yaml"],
    ["demo.yaml", "demo-dicom.yaml"],
    ["real-cpu.yaml"],
    ["real-cpu.yaml", "real-cpu-128px.yaml"],
    ["real-cpu.yaml", "real-cpu-levers.yaml"],
    ["real-cpu.yaml", "real-cpu-128px.yaml", "real-cpu-128px-levers.yaml"],
    ["real-cpu.yaml", "real-cpu-source.yaml"],
    ["real-cpu.yaml", "real-cpu-switches.yaml"],
    ["real-cpu.yaml", "real-cpu-site.yaml"],
    ["real-cpu.yaml", "real-cpu-two-sources.yaml"],
    ["real-cpu.yaml", "real-cpu-site.yaml", "real-cpu-site-finetune.yaml"],
]
# What an overlay's command line adds (its comment says so): the site overlays name the site's
# folder as an external set; the demo's other scanner stands in for it here.
COMMAND_LINE = {
    "real-cpu-site.yaml": {"evaluation": {"external": {"ucsd": "demo:b"}}},
    "real-cpu-two-sources.yaml": {"evaluation": {"external": {"ucsd": "demo:b"}}},
}


def merged_config(*names: str) -> dict:
    from snakemake.utils import update_config

    if "demo-dicom.yaml" in names:  # its check refuses to start without pydicom
        pytest.importorskip("pydicom", reason="demo-dicom.yaml needs the dicom extra")

    config: dict = {}
    for name in names:
        update_config(config, yaml.safe_load((REPO / "config" / name).read_text()))
    for name in names:
        update_config(config, copy.deepcopy(COMMAND_LINE.get(name, {})))
    remove_nulled_keys(config)  # as common.smk does before any check
    return config


@pytest.mark.parametrize("names", SHIPPED_COMMANDS, ids=["+".join(n) for n in SHIPPED_COMMANDS])
def test_the_shipped_configs_are_valid(names):
    assert_valid(merged_config(*names), "+".join(names))


@pytest.mark.parametrize(
    "base, overlay, expected",
    [
        (
            ["real-cpu.yaml"],
            "real-cpu-levers.yaml",
            {"images_128px", "seed_1", "pretrained_cutmix"},
        ),
        (
            ["real-cpu.yaml", "real-cpu-128px.yaml"],
            "real-cpu-128px-levers.yaml",
            {"depth_10", "seed_1", "depth_6_images_160px"},
        ),
    ],
)
def test_a_levers_overlay_adds_variants_to_its_config(base, overlay, expected):
    own = set(merged_config(*base)["ablation"]["variants"])
    config = merged_config(*base, overlay)
    assert_valid(config)
    # The overlay adds to the config's own variants; it never replaces them.
    assert own | expected <= set(config["ablation"]["variants"])


def test_the_128px_overlay_drops_and_inherits_variants_of_the_cpu_default():
    variants = merged_config("real-cpu.yaml", "real-cpu-128px.yaml")["ablation"]["variants"]
    assert "with_augmentation" not in variants and "no_stochastic_depth" not in variants
    assert {"no_conv_tokenizer_seq_pool", "no_pretraining", "depth_6"} <= set(variants)
    # The original recipe is written once, in real-cpu.yaml; the overlay adds what 128 px needs.
    recipe = variants["original_recipe"]
    assert recipe["tokenizer"] == "patch" and recipe["lr_schedule"] == "constant"
    assert recipe["pretrain_epochs"] == 0 and recipe["cutmix"] == 0.0


def test_check_accepts_defaults_filled_in_by_the_schema():
    config = tiny_config()
    validate_config(config, SCHEMA, SCHEMA_PATH)
    assert config["sweep"]["nested"] is True and config["split"]["strategy"] == "grouped"


def test_appearance_augmentation_is_a_training_key_variants_and_the_command_line_can_set():
    config = tiny_config(
        training={"appearance": 0.8},
        ablation={"variants": {"no_appearance": {"appearance": 0.0}}},
    )
    assert_valid(config)
    text = tiny_config(final={"overrides": {"appearance": "0.5"}})
    type_command_line_text(text, SCHEMA)
    assert text["final"]["overrides"]["appearance"] == 0.5
    assert_valid(text)
    too_likely = tiny_config(ablation={"variants": {"always": {"appearance": 1.5}}})
    with pytest.raises(ConfigError, match="ablation.variants.always.appearance: 1.5 is greater"):
        check(too_likely, SCHEMA)


def test_final_override_is_checked_too():
    config = {
        "model": {"patch_size": 16, "embed_dim": 16, "heads": 2},
        "preprocess": {"image_size": 32},
        "training": {},
        "split": {"test": 0.25, "val": 0.25},
        "dataset": {"source": "demo", "path": ""},
        "sweep": {"grid": {"dropout": [0.1]}},
        "final": {"overrides": {"heads": 3}},
        "ablation": {"variants": {}, "cross_validate": False},
        "evaluation": {"folds": 0},
    }
    with pytest.raises(ConfigError, match="final.overrides.heads"):
        check(config, SCHEMA)


def test_an_override_of_a_swept_key_is_refused_naming_it():
    config = tiny_config(final={"overrides": {"epochs": 2, "patch_size": 16}})
    with pytest.raises(ConfigError, match=r"final.overrides.patch_size: patch_size is swept"):
        check(config, SCHEMA)


def test_one_fold_is_refused():
    config = tiny_config(evaluation={"folds": 1})
    with pytest.raises(ConfigError, match="evaluation.folds: one fold"):
        check(config, SCHEMA)


# A rule that ties two settings blames the one set where the failing run is configured, not
# whichever its message happens to start with (issue 37: `final.overrides.heads` was named when
# the user had set final.overrides.embed_dim and the grid the heads).
KEY_BLAME = {
    "width set in final.overrides, heads swept": (
        {"sweep": {"grid": {"heads": [1, 4]}}, "final": {"overrides": {"embed_dim": 30}}},
        "final.overrides.embed_dim: heads 4 does not divide embed_dim 30",
    ),
    "heads set in final.overrides, width in the model section": (
        {"sweep": {"grid": {"patch_size": [8, 16]}}, "final": {"overrides": {"heads": 3}}},
        "final.overrides.heads: heads 3 does not divide embed_dim 16",
    ),
    "image size set in final.overrides, patch swept": (
        {"sweep": {"grid": {"patch_size": [8, 16]}}, "final": {"overrides": {"image_size": 40}}},
        "final.overrides.image_size: patch_size 16 does not divide image_size 40",
    ),
    "patch swept, image size in preprocess": (
        {"sweep": {"grid": {"patch_size": [8, 12]}}},
        "sweep.grid.patch_size: patch_size 12 does not divide image_size 32",
    ),
    "both keys in the model section": (
        {"model": {"embed_dim": 18, "heads": 4}, "sweep": {"grid": {"dropout": [0.1]}}},
        "model.heads: heads 4 does not divide embed_dim 18",
    ),
    "epochs set by a variant, unmixed epochs by final.overrides": (
        {
            "final": {"overrides": {"epochs": 6, "cutmix": 1.0, "cutmix_off_epochs": 3}},
            "ablation": {"variants": {"short": {"epochs": 2}}},
        },
        "ablation.variants.short.epochs: cutmix_off_epochs 3",
    ),
}


@pytest.mark.parametrize("case", KEY_BLAME, ids=list(KEY_BLAME))
def test_a_cross_key_error_names_the_key_the_user_set(case):
    changes, message = KEY_BLAME[case]
    with pytest.raises(ConfigError) as refused:
        validate_config(tiny_config(**changes), SCHEMA, SCHEMA_PATH)
    assert str(refused.value).startswith(message)


def test_command_line_text_takes_the_types_the_schema_asks_for():
    # What Snakemake's --config makes of values nested in a mapping: text, every one.
    config = tiny_config(
        training={"epochs": "3", "lr": "2e-3", "augment": "false", "seed": "-1"},
        sweep={"grid": {"heads": ["1", "2"], "dropout": ["0.1", "0.3"], "tokenizer": ["conv"]}},
        final={"overrides": {"epochs": "4", "cutmix": "0.5", "select_best_epoch": "True"}},
        ablation={"variants": {"plain": {"augment": "false", "label_smoothing": "0"}}},
        dataset={"source": "local", "path": "123", "max_extract_mb": "100"},
    )
    type_command_line_text(config, SCHEMA)
    assert config["training"] == {
        **TINY_CONFIG["training"],
        "epochs": 3,
        "lr": 0.002,
        "augment": False,
        "seed": -1,
    }
    assert config["sweep"]["grid"] == {
        "heads": [1, 2],
        "dropout": [0.1, 0.3],
        "tokenizer": ["conv"],
    }
    assert config["final"]["overrides"] == {"epochs": 4, "cutmix": 0.5, "select_best_epoch": True}
    assert config["ablation"]["variants"] == {"plain": {"augment": False, "label_smoothing": 0}}
    assert config["dataset"]["path"] == "123"  # a string setting stays text
    assert config["dataset"]["max_extract_mb"] == 100
    assert schema_problems(config, SCHEMA) == []


@pytest.mark.parametrize(
    "text, problem",
    [
        ("ten", "training.epochs: 'ten' is not of type 'integer'"),
        ("2.5", "training.epochs: '2.5' is not of type 'integer'"),
        ("nan", "training.epochs: 'nan' is not of type 'integer'"),
        ("0", "training.epochs: 0 is less than the minimum of 1"),
    ],
)
def test_command_line_text_that_is_no_valid_value_is_still_refused(text, problem):
    config = tiny_config(training={"epochs": text})
    type_command_line_text(config, SCHEMA)
    assert problem in schema_problems(config, SCHEMA)


def test_numbers_nested_in_command_line_config_are_accepted(tmp_path: Path):
    # Before, these stopped the run: "sweep.grid.heads: '1' is not of type 'integer'".
    proc = snakemake(
        tmp_path,
        "--dry-run",
        "--config",
        "final={overrides: {epochs: 3, augment: false}}",
        "sweep={grid: {patch_size: [8, 16], heads: [1, 2, 4]}}",
        config=tiny_config(),
    )
    assert re.search(r"train\s+7\b", proc.stdout), proc.stdout  # 6 grid runs and the final


def test_sections_of_the_wrong_shape_are_left_for_the_schema_to_report():
    config = tiny_config(sweep="abc", final=["x"], ablation={"variants": "y"})
    type_command_line_text(config, SCHEMA)  # no AttributeError on a str or list section
    problems = "\n".join(schema_problems(config, SCHEMA))
    assert "sweep: 'abc' is not of type 'object'" in problems
    assert "final: ['x'] is not of type 'object'" in problems
    assert "ablation.variants: 'y' is not of type 'object'" in problems


@pytest.mark.parametrize(
    "variant, shares",
    [
        ({"label_smoothing": 0.0}, True),
        ({"augment": True, "cutmix": 0.0, "lr_schedule": "constant"}, True),
        ({"select_best_epoch": False, "epochs": 10}, True),
        ({"drop_path": 0.0}, False),  # a model setting: the model pretrains otherwise
        ({"tokenizer": "patch", "pooling": "cls"}, False),
        ({"mask_ratio": 0.75}, False),
        ({"pretrain_epochs": 0}, False),
        ({"seed": 1}, False),
        ({"grad_clip": 0.0}, False),  # pretraining clips its gradients too
    ],
)
def test_which_ablation_variants_reuse_the_final_models_pretraining(variant, shares):
    assert shares_final_pretraining(variant) is shares


# --- one source of truth for the defaults -----------------------------------------------------


def schema_defaults(node: dict) -> dict:
    return {key: prop.get("default") for key, prop in node["properties"].items()}


def test_the_settings_classes_default_to_the_schemas_values():
    props = SCHEMA["properties"]
    for cls, section in ((ViTConfig, "model"), (TrainConfig, "training")):
        defaults = schema_defaults(props[section])
        ours = cls().to_dict()
        for key, value in defaults.items():
            assert ours[key] == value, f"{cls.__name__}.{key} {ours[key]!r}, schema {value!r}"
        # every setting of the class is a config key (or one the model fixes itself)
        assert set(ours) - set(defaults) <= {"in_channels", "num_classes", "image_size"}
    assert ViTConfig().image_size == props["preprocess"]["properties"]["image_size"]["default"]


def assert_is_default(value, prop: dict, where: str) -> None:
    if isinstance(value, dict) and "properties" in prop:
        for key, inner in value.items():
            assert key in prop["properties"], f"{where}.{key} is no key of the schema"
            assert_is_default(inner, prop["properties"][key], f"{where}.{key}")
    else:
        assert value == prop.get("default"), f"{where}: {value!r}, schema {prop.get('default')!r}"


def test_config_yaml_holds_the_schemas_defaults():
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    assert_is_default(config, SCHEMA, "config")


def test_every_key_of_the_schema_has_a_description_and_a_default():
    def walk(node: dict, where: str):
        for key, prop in node.get("properties", {}).items():
            name = f"{where}{key}"
            assert isinstance(prop.get("description"), str), f"{name}: no description"
            assert "default" in prop, f"{name}: no default"
            if prop.get("type") == "object":
                walk(prop, f"{name}.")

    walk(SCHEMA, "")


# --- each config's size, as config/README.md states it -----------------------------------------


def readme_trainings() -> dict[str, str]:
    """The first column (the --configfile files) and the trainings column of the configs
    table of config/README.md."""
    lines = (REPO / "config/README.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| config files |"))
    titles = [t.strip() for t in lines[header].strip("|").split("|")]
    column = titles.index("trainings")
    rows = {}
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[column]
    return rows


@pytest.mark.parametrize("names", SHIPPED_COMMANDS, ids=["+".join(n) for n in SHIPPED_COMMANDS])
def test_config_readme_states_each_configs_trainings(names):
    config = merged_config(*names)
    validate_config(config, SCHEMA, SCHEMA_PATH)
    counts = Plan(config).trainings()
    stated = readme_trainings()[" + ".join(f"`{n}`" for n in names)]
    expected = f"{counts['sweep']} + {counts['final']} + {counts['variants']}"
    if counts["adaptations"]:
        expected += f" + {counts['adaptations']} adaptations"
    if counts["pretrainings"]:
        expected += f" (+ {counts['pretrainings']} pretrainings)"
    assert stated == expected


def test_a_configs_keys_merely_reordered_give_the_same_config_but_the_grids_order():
    config = {
        "split": {"val": 0.2, "test": 0.2},
        "sweep": {"grid": {"patch_size": [8, 16], "heads": [1, 2]}},
        "dataset": {"source": "demo", "demo": {"seed": 3, "n_per_class": 10}},
    }
    reordered = {
        "dataset": {"demo": {"n_per_class": 10, "seed": 3}, "source": "demo"},
        "sweep": {"grid": {"patch_size": [8, 16], "heads": [1, 2]}},
        "split": {"test": 0.2, "val": 0.2},
    }
    validate_config(config, SCHEMA, SCHEMA_PATH)
    validate_config(reordered, SCHEMA, SCHEMA_PATH)
    assert repr(config) == repr(reordered)  # Snakemake compares params as text
    assert list(config["sweep"]["grid"]) == ["patch_size", "heads"]  # names its recipes
