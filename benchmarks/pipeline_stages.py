"""The Snakemake targets of benchmarks/gpu_pipeline.sh's two pipeline stages, one a line.

    python benchmarks/pipeline_stages.py main|ablation [--configfile config/config.yaml]

`main` is the pipeline without its ablation: every grid run (trained), every run of the final
recipe (the shipped model on `all` and the cross-validation runs on each fold and seed: shared
pretraining, training, scoring), the baselines, the shipped model's attention maps and the
shipped model file (rule ship_model). These pull in the partition and the data steps.
`ablation` is the rest, the default target (`all`): the ablation variants' runs (their own
pretraining where they cannot share the final recipe's, training, scoring), then the summaries
and the report, which read every scored run, variants included, so they belong here.

Which runs a config asks for is vitct.pipeline.plan's Plan, built from the config as the
Snakefile builds it (vitct.pipeline.config_checks.validate_config on the file alone: a
--configfile replaces config/config.yaml). (gpu_pipeline.sh's `--config dataset=...` only names
where the images came from: no run depends on it.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
STAGES = ("main", "ablation")
# Rules without wildcards, so Snakemake takes their names as targets.
MAIN_RULES = ("ship_model", "baselines", "attention_maps")


def load_config(configfile: Path) -> dict:
    """The config as the Snakefile sees it: checked, with the schema's defaults filled in."""
    from vitct.pipeline.config_checks import validate_config

    config = yaml.safe_load(configfile.read_text()) or {}
    validate_config(config, yaml.safe_load(SCHEMA.read_text()), str(SCHEMA))
    return config


def main_targets(config: dict, results: str = "results") -> list[str]:
    """Everything but the ablation: see the module's docstring."""
    from vitct.pipeline.plan import Plan

    plan = Plan(config)
    grid = [f"{run.folder(results)}/train_metrics.json" for run in plan.sweep_runs()]
    final = [f"{run.folder(results)}/predictions.tsv" for run in plan.final_runs()]
    return [*MAIN_RULES, *grid, *final]


def stage_targets(stage: str, configfile: Path) -> list[str]:
    if stage == "main":
        return main_targets(load_config(configfile))
    return ["all"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    args = parser.parse_args()
    print("\n".join(stage_targets(args.stage, args.configfile)))


if __name__ == "__main__":
    main()
