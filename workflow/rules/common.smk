import os
from pathlib import Path

import yaml
from snakemake.utils import min_version

from vitct.data.cache import source_prefix
from vitct.data.fingerprints import content_fingerprint
from vitct.data.model_input import INTENSITIES, MASKS
from vitct.pipeline.code_inputs import code_files
from vitct.pipeline.config_checks import ConfigError, validate_config
from vitct.pipeline.plan import DATASET, Plan, Run, dataset_spec, pretraining_settings

min_version("8.20")

SCHEMA = "../schemas/config.schema.yaml"

# Schema first (types, ranges, unknown keys, defaults), then the rules a schema cannot state;
# either stops the run before any job, with a message naming the key.
with open(workflow.source_path(SCHEMA)) as f:
    SCHEMA_DOC = yaml.safe_load(f)
try:
    validate_config(config, SCHEMA_DOC, workflow.source_path(SCHEMA))
except ConfigError as e:
    raise ValueError(f"invalid config: {e}") from None

PLAN = Plan(config)
ENV = "../../envs/vitct.yaml"
RESULTS = "results"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
DATA = f"{RESULTS}/data/{{set}}"
IMAGES = "images_{size}px_{mask}_{intensity}.npz"
PARTITION = f"{RESULTS}/data/partition.tsv"
RUN = f"{RESULTS}/runs/{{recipe}}/{{fold}}/seed{{seed}}"
SHIPPED = PLAN.shipped().folder(RESULTS)
SHIPPED_MODEL = f"{RESULTS}/model.safetensors"
SUMMARY = f"{RESULTS}/summary"
SWEEP_THREADS = config["sweep"]["threads"]
FINAL_THREADS = config["final"]["threads"]


wildcard_constraints:
    set="[A-Za-z0-9_-]+",
    size=r"\d+",
    mask="|".join(MASKS),
    intensity="|".join(INTENSITIES),
    recipe="[A-Za-z0-9_~.+-]+",
    fold=r"all|fold\d+|lo_[A-Za-z0-9_-]+|draw\d+",
    seed=r"\d+",


def code(step):
    """The package files (and templates) a step's script imports: editing one reruns the step.
    Snakemake tracks the script itself."""
    script = Path(workflow.basedir) / "workflow" / "scripts" / f"{step}.py"
    return code_files(script, Path(workflow.basedir) / "src" / "vitct")


def run_of(wildcards):
    return Run(wildcards.recipe, wildcards.fold, int(wildcards.seed))


# --- the data ---------------------------------------------------------------------------------


def local_files(wildcards):
    """Every file of a local data set (its folder's, or the zip itself); none for a download
    or the demo."""
    spec = dataset_spec(config, wildcards.set)
    path = Path(spec["path"]).expanduser()
    if spec["source"] != "local" or not path.exists():
        return []
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink())


def data_files(wildcards):
    """The local files as inputs, so that adding, removing or editing an image reruns its data
    steps. Names with braces cannot be inputs (Snakemake reads them as wildcards), and a
    broken link is no file: data_content covers both."""
    return [str(p) for p in local_files(wildcards) if not braced(p) and p.exists()]


def braced(path):
    return "{" in str(path) or "}" in str(path)


def data_content(wildcards):
    """A digest of the local files' contents (vitct.data.fingerprints), as a parameter: a file
    replaced by another with an older time reruns the data steps too."""
    files = [p for p in local_files(wildcards) if p.exists()]
    if not files:
        return ""
    root = Path(dataset_spec(config, wildcards.set)["path"]).expanduser()
    memo = Path(RESULTS) / "data" / wildcards.set / ".content_digests.json"
    return content_fingerprint(root if root.is_dir() else root.parent, files, memo)


# The training sources (vitct.pipeline.plan): each is read from a data set, its paths under a
# prefix in the partition and every run's tables (none for the primary source).
SOURCES = PLAN.sources
TRAINING_SETS = list(dict.fromkeys(SOURCES.values()))
SOURCE_PARAMS = {
    "names": list(SOURCES),
    "sets": list(SOURCES.values()),
    "prefixes": [source_prefix(n, s == DATASET) for n, s in SOURCES.items()],
}


# The data sets the partition reads: the training sources', and the adaptation site's.
PARTITION_SETS = list(
    dict.fromkeys([*TRAINING_SETS, *([PLAN.site] if PLAN.site else [])])
)
# Every image of the adaptation site: in its pool or its evaluation part (empty without a site).
SITE_SPLIT = f"{RESULTS}/data/site_split.tsv"


def base_caches():
    """Every training source (and the adaptation site) preprocessed as the config's preprocess
    section says (the grid's images): their thumbnails and grey-level histograms, the same in
    every cache, are what the partition reads, so another final image size does not
    repartition."""
    pre = config["preprocess"]
    images = IMAGES.format(
        size=pre["image_size"], mask=pre["mask"], intensity=pre["intensity"]
    )
    return [f"{RESULTS}/data/{name}/{images}" for name in PARTITION_SETS]


def cache_of(recipe, data_set=DATASET):
    """A data set's images preprocessed as `recipe` sees them (one cache per preprocessing)."""
    return f"{RESULTS}/data/{data_set}/{IMAGES.format(**PLAN.preprocessing(recipe))}"


def training_caches(recipe):
    """Every training source's images preprocessed as `recipe` sees them, in SOURCES' order."""
    return [cache_of(recipe, data_set) for data_set in SOURCES.values()]


def run_cache(wildcards):
    return training_caches(wildcards.recipe)


def external_caches(wildcards):
    """Every external set, preprocessed as the run's recipe sees it."""
    return [cache_of(wildcards.recipe, name) for name in PLAN.external]


# --- the runs ---------------------------------------------------------------------------------


def choice_metrics(wildcards):
    """The grid runs whose inner-validation metrics choose a tuned recipe's combination."""
    if not PLAN.tuned(wildcards.recipe):
        return []
    runs = PLAN.choice_runs(wildcards.fold)
    return [f"{run.folder(RESULTS)}/train_metrics.json" for run in runs]


def pretraining(wildcards):
    """The shared pretraining the run starts from, or none (vitct.pipeline.plan)."""
    owner = PLAN.pretraining_owner(run_of(wildcards))
    return [] if owner is None else f"{owner.folder(RESULTS)}/pretrained.pt"


def run_params(wildcards):
    """What a run's step needs of the config: the sections it changes, its changes, and how
    its combination is chosen (tuned recipes)."""
    return {
        "recipe": wildcards.recipe,
        "fold": wildcards.fold,
        "seed": int(wildcards.seed),
        "sections": {key: config[key] for key in ("model", "training", "preprocess")},
        "changes": PLAN.run_changes(run_of(wildcards)),
        "tuned": PLAN.tuned(wildcards.recipe),
        "grid": list(config["sweep"]["grid"]),
        "metric": config["training"]["selection_metric"],
    }


def pretrain_params(wildcards):
    """Only what shapes the pretraining, so that changing another setting keeps it."""
    changes = PLAN.run_changes(run_of(wildcards))
    return {**run_params(wildcards), **pretraining_settings(config, changes)}


def run_threads(wildcards):
    return SWEEP_THREADS if not PLAN.tuned(wildcards.recipe) else FINAL_THREADS


def run_resource(key):
    return lambda wildcards: config[
        "final" if PLAN.tuned(wildcards.recipe) else "sweep"
    ][key]


def adaptation_params(wildcards):
    return PLAN.adaptation_of(run_of(wildcards))


def run_file(runs, name):
    return [f"{run.folder(RESULTS)}/{name}" for run in runs]


SPLIT = {
    key: config["split"][key] for key in ("val", "seed", "near_duplicate_threshold")
}


def figure(name, caption, category):
    return report(
        f"{SUMMARY}/{name}.png", caption=f"../report/{caption}.rst", category=category
    )


# The summaries' figures: the sweep, the shipped model on the locked test, reliability on every
# set it is scored on, and, where the config asks for them, the folds and the ablation.
SUMMARY_FIGURES = {
    "sweep_figure": figure("sweep", "sweep_grid", "Sweep"),
    "confusion": figure("confusion", "confusion", "Shipped model"),
    "roc": figure("roc", "roc", "Shipped model"),
    "reliability": figure("reliability", "reliability", "Shipped model"),
}
if PLAN.cv_folds:
    SUMMARY_FIGURES["cv_figure"] = figure("cv_runs", "cv", "Cross-validation")
if PLAN.variants:
    SUMMARY_FIGURES["ablation_figure"] = figure("ablation", "ablation", "Ablation")
if PLAN.adaptation_runs():
    SUMMARY_FIGURES["curve_figure"] = figure(
        "learning_curve", "learning_curve", "Scans from elsewhere"
    )


def predict_folder(wildcards):
    inputs = config["predict"]["inputs"]
    if wildcards.name not in inputs:
        raise ValueError(
            f"predict.inputs has no entry '{wildcards.name}' (configured: "
            f"{', '.join(inputs) or 'none'}); add `predict: {{inputs: {{{wildcards.name}: "
            "FOLDER}}` to the config"
        )
    return inputs[wildcards.name]
