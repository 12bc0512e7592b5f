"""Adapting a trained model to a new site with a few of its labelled slices.

Trained on one source, the model scores near a coin on slices from elsewhere; a few dozen
labelled slices of the new site move it most of the way (docs/experiments.md measures how
far). Fine-tuning trains only the model's last layers (`trainable`) for a fixed number of
epochs at a small learning rate on the site's slices: with so few, there is no validation split
to pick an epoch on, and the layers left as trained bound what the model forgets of its own
source. What was adapted, on what, is recorded in the model file (vitct.model.artifact).

The same function serves the pipeline's learning curve and `vitct adapt`.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from vitct.data.classes import CLASS_DIRS
from vitct.data.dicom import recorded_window
from vitct.data.images import load_input
from vitct.data.manifest import build_manifest
from vitct.data.nifti import source_at
from vitct.errors import UserError
from vitct.model.artifact import carried_over, load_with_familiarity, save_artifact
from vitct.model.input_tensors import normalise
from vitct.model.vit import ViT

log = logging.getLogger(__name__)

TRAINABLE = ("head", "last_block", "all")


def trainable_modules(model: ViT, trainable: str) -> list[torch.nn.Module]:
    """The modules fine-tuning trains: the head and what pools the tokens for it ("head"),
    with the last attention block and the final norm ("last_block"), or the whole model."""
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable is one of {', '.join(TRAINABLE)}, not {trainable!r}")
    if trainable == "all":
        return [model]
    modules = [model.head, *([model.pool_attn] if model.pool_attn is not None else [])]
    if trainable == "last_block":
        modules += [model.blocks[-1], model.norm]
    return modules


def finetune(
    model: ViT,
    images: np.ndarray,
    labels: np.ndarray,
    mean: float,
    std: float,
    *,
    epochs: int,
    lr: float,
    trainable: str,
    seed: int,
    batch_size: int = 16,
    label_smoothing: float = 0.0,
) -> list[float]:
    """Fine-tune `model` in place on uint8 (N, H, W) `images` with their labels; returns each
    epoch's mean loss. The layers not trained keep their weights, and their batch-norm
    statistics (they stay in evaluation mode)."""
    if len(np.unique(labels)) < 2:
        raise ValueError("fine-tuning needs labelled slices of both classes")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    modules = trainable_modules(model, trainable)
    model.eval()
    model.requires_grad_(False)
    for module in modules:
        module.train()
        module.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    device = next(model.parameters()).device
    x_all = normalise(images, mean, std)
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(y_all), generator=gen)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            x, y = x_all[batch].to(device), y_all[batch].to(device)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        losses.append(total / len(order))
        log.info("fine-tune epoch %d/%d loss %.4f", epoch + 1, epochs, losses[-1])
    model.requires_grad_(True)
    model.eval()
    return losses


# `vitct adapt`'s settings when not given: the schema's adaptation defaults (a test holds the
# two together), so the command adapts as the pipeline's learning curve measured.
DEFAULTS = {"epochs": 20, "lr": 0.0001, "trainable": "last_block"}
# Fewer labelled slices of a class than this teach the model nothing of it worth the risk.
MIN_PER_CLASS = 2


class AdaptationError(UserError, ValueError):
    """A labelled folder that cannot adapt a model; the message says what to change."""


def adapt_folder(model_path, folder, output, *, epochs: int, lr: float, trainable: str, seed=0):
    """Adapt the model in `model_path` to the labelled slices of `folder` (the Kaggle layout:
    COVID/ and non-COVID/) and write the adapted model file to `output`, recording what it was
    adapted on; returns that record. Its flag reference and calibration are the original
    model's (not refitted: there is no validation data of the site)."""
    model, meta, reference = load_with_familiarity(model_path)
    manifest, rejects = build_manifest(folder, progress=False, setting="the labelled folder")
    counts = {CLASS_DIRS[1 - label]: int((manifest.label == label).sum()) for label in (1, 0)}
    short = [f"{n} {name}" for name, n in counts.items() if n < MIN_PER_CLASS]
    if short:
        raise AdaptationError(
            f"'{folder}' holds too few usable labelled slices ({', '.join(short)}): adapting "
            f"needs {MIN_PER_CLASS} of each class at least (a few dozen help far more); add "
            "slices to COVID/ and non-COVID/"
        )
    pre = meta["preprocessing"]
    mask, intensity = pre.get("mask", "none"), pre.get("intensity", "raw")
    lung_window = recorded_window(pre)  # DICOM and NIfTI are converted as training did
    settings = (pre["image_size"], mask, intensity)
    images = np.stack(
        [
            load_input(source_at(Path(folder), path), *settings, lung_window)[0]
            for path in manifest.path
        ]
    )
    label_smoothing = meta.get("training", {}).get("label_smoothing", 0.0)
    finetune(
        model,
        images,
        manifest.label.to_numpy(),
        pre["mean"],
        pre["std"],
        epochs=epochs,
        lr=lr,
        trainable=trainable,
        seed=seed,
        label_smoothing=label_smoothing,
    )
    record = {
        "folder": str(folder),
        "method": "finetune",
        "slices": int(len(manifest)),
        "classes": counts,
        "rejected": int(len(rejects)),
        "manifest_sha256": hashlib.sha256(manifest.to_csv(index=False).encode()).hexdigest(),
        "epochs": epochs,
        "lr": lr,
        "trainable": trainable,
    }
    save_artifact(
        output,
        model,
        preprocessing=pre,
        familiarity=reference,
        data={**meta.get("data", {}), "adaptation": record},
        **carried_over(meta),
    )
    return record
