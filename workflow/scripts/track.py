"""Log one finished training run (its settings, per-epoch history, final metrics and model file)
to the local MLflow store (tracking.mlflow; vitct.pipeline.tracking)."""

import json
from pathlib import Path

import pandas as pd

from vitct.atomic_files import write_text
from vitct.pipeline import harness
from vitct.pipeline.tracking import RunIdentity, log_run, run_record, store_uri


def main(snakemake):
    params, inputs = snakemake.params, snakemake.input
    metrics = json.loads(Path(inputs.metrics).read_text())
    settings, final, tags = run_record(metrics)
    run = RunIdentity(params.recipe, params.fold, params.seed, params.kind)
    entry = log_run(
        Path(params.store),
        params.experiment,
        run,
        settings,
        pd.read_csv(inputs.history, sep="\t"),
        final,
        [Path(inputs.model), Path(inputs.metrics)],
        tags,
    )
    record = {
        "run": run.name,
        "mlflow_run_id": entry,
        "experiment": params.experiment,
        "store": store_uri(Path(params.store)),
    }
    write_text(snakemake.output.logged, json.dumps(record, indent=2, sort_keys=True))


harness.run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
