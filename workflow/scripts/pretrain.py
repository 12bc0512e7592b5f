"""Masked-image pretraining of a run, on its own, so that every run it fits (the final recipe
and the variants that leave it as it is, on the same fold and seed) starts from it instead of
pretraining again. It sees the run's training and inner validation images, unlabelled."""

from pathlib import Path

import pandas as pd

from vitct.data.cache import load_training_cache
from vitct.pipeline import harness
from vitct.pipeline.plan import step_settings
from vitct.training.checkpoint import pretraining_checkpoint, save_atomically
from vitct.training.loop import fingerprint
from vitct.training.run import pretrain_run


def main(snakemake):
    params, inputs = snakemake.params.run, snakemake.input
    model_cfg, train_cfg, _, _ = step_settings(params, inputs.choice)
    table = pd.read_csv(inputs.partition, sep="\t", keep_default_na=False)
    output = Path(snakemake.output.pretrained)
    # Not an output: Snakemake keeps it when the job is killed, and the rerun resumes from it.
    resume = pretraining_checkpoint(output)
    result = pretrain_run(
        load_training_cache(inputs.cache, snakemake.params.prefixes),
        table,
        params["fold"],
        snakemake.params.split,
        model_cfg,
        train_cfg,
        resume_path=resume,
        run_id=fingerprint(model_cfg, train_cfg, *inputs.cache, inputs.partition),
    )
    save_atomically(result, output)
    resume.unlink(missing_ok=True)


harness.run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
