import itertools
import os
from pathlib import Path

import pandas as pd
import yaml
from snakemake.utils import Paramspace, min_version, validate

from vitct.config import ConfigError, check, run_settings

min_version("8.20")

SCHEMA = "../schemas/config.schema.yaml"

# Schema first (types, ranges, unknown keys, defaults), then the rules a schema cannot state.
validate(config, SCHEMA)
try:
    check(config, yaml.safe_load(open(workflow.source_path(SCHEMA))))
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


TRAINING_CODE = package_files("model", "settings", "train", "data", "metrics")

GRID = config["sweep"]["grid"]
paramspace = Paramspace(
    pd.DataFrame(list(itertools.product(*GRID.values())), columns=list(GRID)),
    filename_params="*",
)


def local_source():
    """A local folder is an input (its mtime changes when images are added or removed)."""
    dataset = config["dataset"]
    if dataset["source"] == "local" and Path(dataset["path"]).exists():
        return dataset["path"]
    return []


def combination(wildcards):
    """The grid values of one sweep job, as plain Python values (not numpy scalars)."""
    return {k: getattr(v, "item", lambda: v)() for k, v in paramspace.instance(wildcards).items()}


def sweep_settings(wildcards):
    """(model, training) settings of one grid combination."""
    return run_settings(config, combination(wildcards))


def defined_envvars(*names):
    return [name for name in names if name in os.environ]
