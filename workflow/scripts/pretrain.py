"""Masked-image pretraining of the final model or an ablation variant, on its own, so that
every run with the same pretraining settings starts from it instead of pretraining again."""

from pathlib import Path

import torch

from vitct import step
from vitct.config import tuned_run_settings
from vitct.data import load_splits
from vitct.settings import TrainConfig, ViTConfig
from vitct.train import pretrain_encoder


def main(snakemake):
    settings = snakemake.params.settings
    _, model_settings, train_settings = tuned_run_settings(
        settings["base"], snakemake.input.best, settings["overrides"]
    )
    cache = load_splits(snakemake.input.cache, snakemake.input.split)
    result = pretrain_encoder(
        ViTConfig.from_dict(model_settings), TrainConfig.from_dict(train_settings), cache
    )
    tmp = Path(f"{snakemake.output.pretrained}.tmp")
    torch.save(result, tmp)
    tmp.replace(snakemake.output.pretrained)


step.run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
