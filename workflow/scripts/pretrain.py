"""Masked-image pretraining of the final model or an ablation variant, on its own, so that
every run with the same pretraining settings starts from it instead of pretraining again."""

from pathlib import Path

from vitct import step
from vitct.checkpoint import pretraining_checkpoint, save_atomically
from vitct.config import tuned_run_settings
from vitct.data import load_splits
from vitct.settings import TrainConfig, ViTConfig
from vitct.train import fingerprint, pretrain_encoder


def main(snakemake):
    settings = snakemake.params.settings
    _, model_settings, train_settings = tuned_run_settings(
        settings["base"], snakemake.input.best, settings["overrides"]
    )
    model_cfg = ViTConfig.from_dict(model_settings)
    train_cfg = TrainConfig.from_dict(train_settings)
    cache = load_splits(snakemake.input.cache, snakemake.input.split)
    output = Path(snakemake.output.pretrained)
    # Not an output: Snakemake keeps it when the job is killed, and the rerun resumes from it.
    resume = pretraining_checkpoint(output)
    result = pretrain_encoder(
        model_cfg,
        train_cfg,
        cache,
        resume_path=resume,
        run_id=fingerprint(model_cfg, train_cfg, snakemake.input.cache, snakemake.input.split),
    )
    save_atomically(result, output)
    resume.unlink(missing_ok=True)


step.run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
