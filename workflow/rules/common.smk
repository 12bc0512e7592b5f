import itertools
import os
from pathlib import Path

import pandas as pd
import yaml
from snakemake.utils import Paramspace, min_version, validate

from vitct.config import (
    ConfigError,
    check,
    pretraining_settings,
    run_settings,
    schema_problems,
    shares_final_pretraining,
    type_command_line_text,
)

min_version("8.20")

SCHEMA = "../schemas/config.schema.yaml"

# Schema first (types, ranges, unknown keys, defaults), then the rules a schema cannot state;
# either stops the run before any job, with a message naming the key.
with open(workflow.source_path(SCHEMA)) as f:
    SCHEMA_DOC = yaml.safe_load(f)
type_command_line_text(config, SCHEMA_DOC)
problems = schema_problems(config, SCHEMA_DOC)
if problems:
    raise ValueError("invalid config:\n  " + "\n  ".join(problems))
validate(config, SCHEMA)  # fills in the defaults
try:
    check(config, SCHEMA_DOC)
except ConfigError as e:
    raise ValueError(f"invalid config: {e}") from None

ENV = "../../envs/vitct.yaml"
RESULTS = "results"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"

# Imported modules are not tracked by Snakemake on their own: rules that run model code name
# the package files they depend on as inputs, so editing them reruns those rules.
PACKAGE = Path(workflow.basedir) / "src" / "vitct"


def package_files(*names):
    return [str(PACKAGE / f"{name}.py") for name in names]


TRAINING_CODE = package_files(
    "model",
    "settings",
    "train",
    "batches",
    "data",
    "metrics",
    "pretrain",
    "optim",
    "checkpoint",
    "inference",
)

GRID = config["sweep"]["grid"]
paramspace = Paramspace(
    pd.DataFrame(list(itertools.product(*GRID.values())), columns=list(GRID)),
    filename_params="*",
)


def local_source():
    """Every file of a local folder (or the zip) is an input, so adding, removing or editing
    an image reruns the data steps."""
    dataset = config["dataset"]
    path = Path(dataset["path"])
    if dataset["source"] != "local" or not path.exists():
        return []
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.is_file())
    return [str(path)]


def combination(wildcards):
    """The grid values of one sweep job, as plain Python values (not numpy scalars)."""
    return {
        k: getattr(v, "item", lambda: v)()
        for k, v in paramspace.instance(wildcards).items()
    }


def sweep_settings(wildcards):
    """(model, training) settings of one grid combination."""
    return run_settings(config, combination(wildcards))


def defined_envvars(*names):
    return [name for name in names if name in os.environ]


def predict_folder(wildcards):
    inputs = config["predict"]["inputs"]
    if wildcards.name not in inputs:
        raise ValueError(
            f"predict.inputs has no entry '{wildcards.name}' (configured: "
            f"{', '.join(inputs) or 'none'}); add `predict: {{inputs: {{{wildcards.name}: "
            "FOLDER}}` to the config"
        )
    return inputs[wildcards.name]


VARIANTS = config["ablation"]["variants"]


def ablation_overrides(wildcards):
    """The final model's overrides with one ablation variant's changes on top."""
    return {**config["final"]["overrides"], **VARIANTS[wildcards.variant]}


def pretraining_file(owner, overrides):
    """The shared masked-image pretraining a run starts from (its `pretrain_*` rule's output),
    or none: when the run does not pretrain, or when only the sweep's result says whether it
    does (pretrain_epochs swept and not overridden); the training job then pretrains itself.
    """
    if "pretrain_epochs" in GRID and "pretrain_epochs" not in overrides:
        return []
    if not run_settings(config, overrides)[1]["pretrain_epochs"]:
        return []
    return f"{RESULTS}/{owner}/pretrained.pt"


def final_pretraining(wildcards):
    return pretraining_file("final", config["final"]["overrides"])


def variant_pretraining(wildcards):
    """The final model's pretraining when the variant leaves it unchanged, else its own."""
    variant = VARIANTS[wildcards.variant]
    owner = (
        "final"
        if shares_final_pretraining(variant)
        else f"ablation/{wildcards.variant}"
    )
    return pretraining_file(owner, ablation_overrides(wildcards))


# One cache per image size, written by the preprocess rule.
IMAGE_CACHE = f"{RESULTS}/data/images_{{size}}px.npz"


def image_cache(changes):
    """The preprocessed images for a run with these changes: one cache per image size, so a
    final model (or ablation variant) may see larger images than the sweep."""
    size = run_settings(config, changes)[0]["image_size"]
    return IMAGE_CACHE.format(size=size)


SWEEP_IMAGES = image_cache({})  # the sweep, the split and the baselines
FINAL_IMAGES = image_cache(config["final"]["overrides"])


def variant_images(wildcards):
    return image_cache(ablation_overrides(wildcards))


def ablation_outputs(wildcards):
    """The ablation table and figure for the report, none when no variant is configured."""
    if not VARIANTS:
        return {}
    return {
        "ablation_table": f"{RESULTS}/ablation/ablation.tsv",
        "ablation_figure": f"{RESULTS}/ablation/ablation.png",
    }


wildcard_constraints:
    variant="[A-Za-z0-9_-]+",
    size="[0-9]+",
