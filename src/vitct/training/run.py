"""One run of the protocol, from the image cache to a trained model: take the run's training
images and inner validation split (vitct.data.partition), train, and fit the out-of-distribution
reference on them.

Only the images of the run's `train` and `val` parts are handed to training: their labels, and
nothing of the held-out fold, the locked test or external sets, reach any choice the run makes
(its epoch, its threshold). tests/test_protocol.py holds that by permuting the others' labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from vitct.data.partition import run_data, run_parts
from vitct.model.inference import predict_with_features
from vitct.model.ood import Familiarity
from vitct.model.ood import fit as fit_ood
from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT
from vitct.training.loop import pretrain_encoder, train
from vitct.training.settings import TrainConfig


@dataclass
class TrainedRun:
    model: ViT
    history: pd.DataFrame
    best: dict  # the selected epoch's row: epoch, lr, train and val_* metrics
    reference: Familiarity | None
    mean: float  # the training images' pixel statistics, which standardise the input
    std: float
    images: dict  # images per part: train, val

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def training_data(cache: dict, table: pd.DataFrame, fold: str, split: dict) -> dict:
    """The run's `train` and `val` images (and their statistics), nothing else."""
    parts = run_parts(table, fold, split["val"], split["seed"])
    return run_data(cache, table, parts, ("train", "val"))


def train_run(
    cache: dict,
    table: pd.DataFrame,
    fold: str,
    split: dict,
    model_cfg: ViTConfig,
    train_cfg: TrainConfig,
    *,
    reference: bool = True,
    pretrained: dict | None = None,
    resume_path=None,
    run_id: str = "",
) -> TrainedRun:
    """Train the run on `fold` (split: the config's split section, for the inner validation
    split); with `reference`, also fit its out-of-distribution reference (training images) and
    threshold (inner validation images)."""
    data = training_data(cache, table, fold, split)
    model, history, best = train(
        model_cfg, train_cfg, data, resume_path=resume_path, run_id=run_id, pretrained=pretrained
    )
    fitted = ood_reference(model, data) if reference else None
    counts = {part: int(len(data[f"{part}_y"])) for part in ("train", "val")}
    return TrainedRun(model, history, best, fitted, data["mean"], data["std"], counts)


def pretrain_run(
    cache: dict,
    table: pd.DataFrame,
    fold: str,
    split: dict,
    model_cfg: ViTConfig,
    train_cfg: TrainConfig,
    resume_path=None,
    run_id: str = "",
) -> dict:
    """Masked-image pretraining on the run's own training and inner validation images,
    unlabelled; the run's training starts from it (vitct.training.loop.pretrain_encoder)."""
    data = training_data(cache, table, fold, split)
    return pretrain_encoder(model_cfg, train_cfg, data, resume_path=resume_path, run_id=run_id)


def ood_reference(model: ViT, data: dict) -> Familiarity:
    """Where the trained model puts the training images (the reference) and the inner
    validation images (its threshold): scoring and `vitct predict` flag images far outside.
    fp32 (bf16=False), as scoring and predict run."""
    mean, std = float(data["mean"]), float(data["std"])
    _, train = predict_with_features(model, data["train_x"], mean, std, bf16=False)
    _, val = predict_with_features(model, data["val_x"], mean, std, bf16=False)
    return fit_ood(train, val, data["train_grey"], data["val_grey"])
