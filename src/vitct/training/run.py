"""One run of the protocol, from the image cache to a trained model: take the run's training
images and inner validation split (vitct.data.partition), train, and fit the out-of-distribution
reference and the temperature (vitct.model.calibration) on them.

Only the images of the run's `train` and `val` parts are handed to training: their labels, and
nothing of the held-out fold, the locked test or external sets, reach any choice the run makes
(its epoch, its threshold, its temperature). tests/test_protocol.py holds that by permuting the
others' labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from vitct.data.partition import run_data, run_parts
from vitct.evaluation.metrics import brier_score, expected_calibration_error
from vitct.model.calibration import Calibration, at_bound, fit_temperature, images_digest
from vitct.model.inference import covid_probability, logits_and_features
from vitct.model.ood import Familiarity
from vitct.model.ood import fit as fit_ood
from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT
from vitct.training.loop import pretrain_encoder, train
from vitct.training.settings import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class TrainedRun:
    model: ViT
    history: pd.DataFrame
    best: dict  # the selected epoch's row: epoch, lr, train and val_* metrics
    reference: Familiarity | None
    calibration: Calibration | None  # fitted with the reference (a scored run), else None
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
    threshold (inner validation images), and its temperature (inner validation images)."""
    data = training_data(cache, table, fold, split)
    model, history, best = train(
        model_cfg, train_cfg, data, resume_path=resume_path, run_id=run_id, pretrained=pretrained
    )
    fitted, calibration = fit_references(model, data) if reference else (None, None)
    counts = {part: int(len(data[f"{part}_y"])) for part in ("train", "val")}
    return TrainedRun(model, history, best, fitted, calibration, data["mean"], data["std"], counts)


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


def fit_references(model: ViT, data: dict) -> tuple[Familiarity, Calibration]:
    """What the trained model's file carries beside its weights, from one fp32 forward pass
    (bf16=False, as scoring and predict run) over the training and the inner validation images:
    - where it puts the training images (the out-of-distribution reference) and the inner
      validation images (its threshold): scoring and `vitct predict` flag images far outside;
    - the temperature, fitted on the inner validation images' logits and labels alone."""
    mean, std = float(data["mean"]), float(data["std"])
    _, train = logits_and_features(model, data["train_x"], mean, std, bf16=False)
    val_logits, val = logits_and_features(model, data["val_x"], mean, std, bf16=False)
    reference = fit_ood(train, val, data["train_grey"], data["val_grey"])
    return reference, calibrate(val_logits, data["val_y"], data["val_paths"])


def calibrate(logits, labels, paths) -> Calibration:
    """The temperature of the inner validation images' (N, 2) logits, with their ECE and Brier
    score before (T = 1) and after it."""
    temperature = fit_temperature(logits, labels)
    before = covid_probability(logits)
    after = covid_probability(logits, temperature)
    calibration = Calibration(
        temperature=temperature,
        images=int(len(labels)),
        images_sha256=images_digest(paths),
        ece_before=expected_calibration_error(labels, before),
        ece_after=expected_calibration_error(labels, after),
        brier_before=brier_score(labels, before),
        brier_after=brier_score(labels, after),
        at_bound=at_bound(temperature),
    )
    log.info(
        "temperature %.4g on %d inner validation images%s: ECE %.4f -> %.4f, Brier %.4f -> %.4f",
        temperature,
        calibration.images,
        " (at the end of its range)" if calibration.at_bound else "",
        calibration.ece_before,
        calibration.ece_after,
        calibration.brier_before,
        calibration.brier_after,
    )
    return calibration
