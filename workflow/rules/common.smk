import itertools
import os
from pathlib import Path

import pandas as pd
import yaml
from snakemake.utils import Paramspace, min_version, validate

from vitct.config import (
    DEMO_EXTERNAL,
    ConfigError,
    check,
    pretraining_settings,
    run_settings,
    schema_problems,
    shares_final_pretraining,
    type_command_line_text,
)
from vitct.model_input import INTENSITIES, MASKS
from vitct.overlays import remove_nulled_keys

min_version("8.20")

SCHEMA = "../schemas/config.schema.yaml"

# Schema first (types, ranges, unknown keys, defaults), then the rules a schema cannot state;
# either stops the run before any job, with a message naming the key.
with open(workflow.source_path(SCHEMA)) as f:
    SCHEMA_DOC = yaml.safe_load(f)
remove_nulled_keys(config)  # an overlay's `key: null` drops what the file below it set
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
    "appearance",
    "data",
    "metrics",
    "pretrain",
    "optim",
    "checkpoint",
    "accelerator",
    "inference",
    "familiarity",
)

GRID = config["sweep"]["grid"]
paramspace = Paramspace(
    pd.DataFrame(list(itertools.product(*GRID.values())), columns=list(GRID)),
    filename_params="*",
)


def local_files():
    """Every file of a local folder (or the zip itself)."""
    dataset = config["dataset"]
    path = Path(dataset["path"])
    if dataset["source"] != "local" or not path.exists():
        return []
    return (
        sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    )


def braced(path):
    return "{" in str(path) or "}" in str(path)


SWEEP_FOLD = f"{RESULTS}/sweep/fold{{fold}}/{paramspace.wildcard_pattern}"


def sweep_metrics(wildcards):
    """Every sweep job's metrics: one per combination, or one per combination and fold."""
    if config["sweep"]["folds"] == 1:
        pattern = f"{RESULTS}/sweep/{{params}}/metrics.json"
        return expand(pattern, params=paramspace.instance_patterns)
    pattern = f"{RESULTS}/sweep/fold{{fold}}/{{params}}/metrics.json"
    folds = range(config["sweep"]["folds"])
    return expand(pattern, fold=folds, params=paramspace.instance_patterns)


def local_source():
    """Every local file is an input, so adding, removing or editing an image reruns the data
    steps; all but those with braces in their names (see braced_local_files)."""
    return [str(p) for p in local_files() if not braced(p)]


def braced_local_files():
    """Local files whose names hold braces (`Covid {1}.png`) cannot be inputs: Snakemake reads
    braces in a file name as a wildcard, and has no way to escape them. Their size and
    modification time are a parameter instead, so that changing one reruns the data steps too.
    """
    return {
        str(p): f"{p.stat().st_size} bytes, modified {p.stat().st_mtime_ns} ns"
        for p in local_files()
        if braced(p)
    }


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


# One cache per image size, mask and intensity, written by the preprocess rule.
IMAGE_FILE = "images_{size}px_{mask}_{intensity}.npz"
IMAGE_CACHE = f"{RESULTS}/data/{IMAGE_FILE}"


wildcard_constraints:
    size=r"\d+",
    mask="|".join(MASKS),
    intensity="|".join(INTENSITIES),


def preprocessing(changes):
    """The wildcards of the images a run with these changes sees."""
    model = run_settings(config, changes)[0]
    return dict(
        size=model["image_size"], mask=model["mask"], intensity=model["intensity"]
    )


def image_cache(changes, folder=f"{RESULTS}/data"):
    """The preprocessed images for a run with these changes (in `folder`: an external set's
    own): one cache per preprocessing, so a final model (or ablation variant) may see larger,
    masked or standardised images unlike the sweep's."""
    return f"{folder}/{IMAGE_FILE.format(**preprocessing(changes))}"


SHORTCUT_METER = (
    f"{RESULTS}/baseline/shortcut_meter_{{size}}px_{{mask}}_{{intensity}}.json"
)
SWEEP_IMAGES = image_cache({})  # the sweep, the split and the baselines
FINAL_IMAGES = image_cache(config["final"]["overrides"])
FINAL_SHORTCUT_METER = SHORTCUT_METER.format(
    **preprocessing(config["final"]["overrides"])
)


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


# Cross-validation: one run per (fold, seed); none when evaluation.folds is 0.
CV_RUN = f"{RESULTS}/cv/fold{{fold}}_seed{{seed}}"
CV_RUNS = {
    "fold": [
        f
        for f in range(config["evaluation"]["folds"])
        for _ in config["evaluation"]["seeds"]
    ],
    "seed": [
        s
        for _ in range(config["evaluation"]["folds"])
        for s in config["evaluation"]["seeds"]
    ],
}


def cv_overrides(wildcards):
    """The final model's overrides with the run's training seed."""
    return {**config["final"]["overrides"], "seed": int(wildcards.seed)}


def cv_pretraining(wildcards):
    """The seed's shared pretraining (pretrain_cv), or none when the recipe does not pretrain."""
    return pretraining_file(f"cv/seed{wildcards.seed}", cv_overrides(wildcards))


# The ablation's variants over the same folds and seeds.
ABLATION_CV_RUN = f"{RESULTS}/ablation/{{variant}}/cv/fold{{fold}}_seed{{seed}}"
ABLATION_CV_PREDICTIONS = [
    f"{RESULTS}/ablation/{variant}/cv/fold{fold}_seed{seed}/predictions.tsv"
    for variant in config["ablation"]["variants"]
    for fold, seed in zip(CV_RUNS["fold"], CV_RUNS["seed"])
    if config["ablation"]["cross_validate"]
]


def variant_cv_overrides(wildcards):
    """An ablation variant's overrides with the cross-validation run's training seed."""
    return {**ablation_overrides(wildcards), "seed": int(wildcards.seed)}


def variant_cv_pretraining(wildcards):
    """The seed's pretraining of the final recipe when the variant leaves it as it is, else
    the variant's own for that seed; none when the variant does not pretrain."""
    variant = config["ablation"]["variants"][wildcards.variant]
    owner = f"ablation/{wildcards.variant}/cv/seed{wildcards.seed}"
    if shares_final_pretraining(variant):
        owner = f"cv/seed{wildcards.seed}"
    return pretraining_file(owner, variant_cv_overrides(wildcards))


def cv_outputs(wildcards):
    """The cross-validation headline, tables and figure for the report (and the ablation over
    the folds when there are variants), none without folds."""
    if not config["evaluation"]["folds"]:
        return {}
    outputs = {
        "cv_headline": f"{RESULTS}/cv/headline.json",
        "cv_folds": f"{RESULTS}/cv/folds_summary.tsv",
        "cv_figure": f"{RESULTS}/cv/runs.png",
    }
    if ABLATION_CV_PREDICTIONS:
        outputs["cv_ablation"] = f"{RESULTS}/ablation/cv_ablation.tsv"
    return outputs


# External sets (evaluation.external, workflow/rules/external.smk).
EXTERNAL = config["evaluation"]["external"]
EXTERNAL_DIR = f"{RESULTS}/external/{{ext}}"


def external_images(changes):
    """Every external set's images preprocessed as a run with these changes sees them."""
    return [image_cache(changes, f"{RESULTS}/external/{ext}") for ext in EXTERNAL]


def cv_external_images(wildcards):
    return external_images(config["final"]["overrides"])


def variant_cv_external_images(wildcards):
    return external_images(ablation_overrides(wildcards))


def external_path(wildcards):
    return EXTERNAL[wildcards.ext]


def external_files(wildcards):
    """Every file of the set (or the zip itself), so that changing one reruns its steps;
    names with braces cannot be inputs (see braced_local_files)."""
    path = Path(external_path(wildcards)).expanduser()
    if not path.exists():  # a demo set (demo:b), generated
        return []
    files = (
        sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    )
    return [str(p) for p in files if not braced(p)]


def external_dataset(wildcards):
    """The set as a local dataset, expecting no particular counts; `demo:SCANNER` is the demo
    generator's other scanner, with other slices (the next generator seed) than the demo's.
    """
    path = external_path(wildcards)
    dataset = {
        "source": "local",
        "path": path,
        "max_extract_mb": config["dataset"]["max_extract_mb"],
        "expected_counts": None,
    }
    if path.startswith(DEMO_EXTERNAL):
        demo = config["dataset"]["demo"]
        scanner = path.removeprefix(DEMO_EXTERNAL)
        dataset.update(
            source="demo", demo={**demo, "seed": demo["seed"] + 1, "scanner": scanner}
        )
    return dataset


def variant_models(wildcards):
    return expand(f"{RESULTS}/ablation/{{variant}}/model.safetensors", variant=VARIANTS)


def variant_external_images(wildcards):
    """Each variant's external images, preprocessed as that variant's input."""
    folder = f"{RESULTS}/external/{wildcards.ext}"
    return [
        image_cache({**config["final"]["overrides"], **v}, folder)
        for v in VARIANTS.values()
    ]


def external_outputs(wildcards):
    """Every external set's metrics and variant table, for the report."""
    return {
        f"external_{name}_{kind}": f"{RESULTS}/external/{name}/{kind}.{suffix}"
        for name in EXTERNAL
        for kind, suffix in (
            ("metrics", "json"),
            ("variants", "tsv"),
            ("reliability", "png"),
        )
    }


wildcard_constraints:
    variant="[A-Za-z0-9_-]+",
    size="[0-9]+",
    fold="[0-9]+",
    seed="[0-9]+",
    ext="[A-Za-z0-9_-]+",
