"""The training loop: AdamW with warm-up and cosine decay, augmentation, best-epoch selection,
early stopping, a checkpoint every epoch and resumption from it after an interruption.

train() reads top to bottom: build the loop's objects, resume or pretrain, run the epochs
(each one recorded, the best kept, a checkpoint written), then hand back the selected epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from vitct.evaluation.metrics import binary_metrics
from vitct.model.inference import autocast, predict_proba
from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT
from vitct.training import accelerator
from vitct.training.batches import Prefetcher, close, epoch_batches
from vitct.training.checkpoint import (
    load_checkpoint,
    loop_state,
    pretraining_checkpoint,
    restore_loop_state,
    save_atomically,
)
from vitct.training.optim import optimisation_step, parameter_groups, time_left, warmup_cosine
from vitct.training.pretrain import PretrainingMismatchError, pretrain
from vitct.training.settings import TrainConfig, pretraining_identity

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def maybe_compile(model: ViT, setting: str, device: torch.device):
    """torch.compile where it pays: "auto" asks vitct.accelerator (never on the CPU, where a
    compiled training step measured 0.7x the eager one after an 18 s compile)."""
    if accelerator.use(setting, "compile", device):
        log.info("compiling the model with torch.compile")
        return torch.compile(model, dynamic=False)
    return model


def build_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    return warmup_cosine(
        optimizer,
        cfg.warmup_epochs * steps_per_epoch,
        cfg.epochs * steps_per_epoch,
        constant=cfg.lr_schedule == "constant",
    )


def fingerprint(model_cfg: ViTConfig, train_cfg: TrainConfig, *data_paths: str | Path) -> str:
    """Identity of a training run, so a stale checkpoint is never resumed."""
    stats = [(Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p in data_paths]
    payload = json.dumps([model_cfg.to_dict(), train_cfg.to_dict(), stats], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def pretrain_encoder(
    model_cfg: ViTConfig,
    train_cfg: TrainConfig,
    cache: dict,
    resume_path: str | Path | None = None,
    run_id: str = "",
) -> dict:
    """Masked-image pretraining as the start of train(), on its own: the weights, the random
    number generators' states after it and what it was made with (train() takes it back).

    Pretrains on the run's unlabelled train and validation scans (vitct.training.run hands it
    no other: never a held-out fold, the locked test or an external set). With
    `resume_path`, it checkpoints every epoch there and resumes from a checkpoint of the same
    `run_id`; the caller removes the file once the result is safe.
    """
    seed_everything(train_cfg.seed)
    device = pick_device(train_cfg.device)
    model = ViT(model_cfg).to(device)  # the same draws as train()'s model
    gen = torch.Generator().manual_seed(train_cfg.seed)
    images = np.concatenate([cache["train_x"], cache["val_x"]])
    mean, std = float(cache["mean"]), float(cache["std"])
    losses = pretrain(model, images, train_cfg, mean, std, gen, resume_path, run_id)
    return {
        "identity": pretraining_identity(model_cfg, train_cfg),
        "model": _cpu_state(model),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else torch.zeros(0),
        "losses": losses,
    }


def _start_from_pretraining(model: ViT, gen: torch.Generator, pretrained: dict, expected: dict):
    """Load a pretrain_encoder() result into the model and the generators, so training goes on
    exactly as if it had pretrained itself."""
    if pretrained["identity"] != expected:
        differ = sorted(k for k in expected if expected[k] != pretrained["identity"].get(k))
        raise PretrainingMismatchError(
            f"the pretrained weights were made with other settings ({', '.join(differ)} "
            "differ); delete them so that their pretraining runs again with this run's settings"
        )
    model.load_state_dict(pretrained["model"])
    gen.set_state(pretrained["generator"])
    torch.set_rng_state(pretrained["torch_rng"])
    if len(pretrained["cuda_rng"]) and next(model.parameters()).is_cuda:
        torch.cuda.set_rng_state(pretrained["cuda_rng"])


@dataclass
class _Loop:
    """The objects a training run steps through its epochs."""

    cfg: TrainConfig
    model: ViT
    step_model: torch.nn.Module  # the model, compiled where that helps; shares its weights
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator  # the data's draws: order, augmentation, CutMix
    loss_fn: torch.nn.Module
    train_x: torch.Tensor
    train_y: torch.Tensor
    mean: float
    std: float
    bf16: bool  # autocast on CUDA (training.bf16, as vitct.accelerator decides for "auto")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def epoch_batches(self, epoch: int):
        """(generator state before the epoch's draws, the epoch's batches). Started before
        the previous epoch's validation, so the prefetch thread has the first batch ready."""
        state = self.gen.get_state()
        if epoch >= self.cfg.epochs:
            return state, ()
        batches = epoch_batches(
            self.train_x, self.train_y, self.cfg, self.mean, self.std, self.device, self.gen, epoch
        )
        return state, Prefetcher(batches) if self.cfg.prefetch else batches


@dataclass
class _Progress:
    """Where a run stands: what its checkpoint holds besides the loop's objects."""

    history: list = field(default_factory=list)  # one row per epoch done
    best: dict = field(default_factory=lambda: {"score": -math.inf, "epoch": 0, "state": None})
    epochs_done: int = 0
    stale: int = 0  # epochs since the best, for early stopping

    def record(self, row: dict, score: float, model: ViT) -> None:
        """Add an epoch's row, and keep its weights when its score is the best so far."""
        self.history.append(row)
        self.epochs_done = row["epoch"]
        if score > self.best["score"]:  # strictly better: ties keep the earlier epoch
            self.best = {"score": score, "epoch": row["epoch"], "state": _cpu_state(model)}
            self.stale = 0
        else:
            self.stale += 1


@dataclass
class _Checkpoints:
    """The checkpoint a run writes after every epoch (none without a path)."""

    path: str | Path | None
    run_id: str
    # A run that pretrains for itself checkpoints that beside the training checkpoint, until
    # the training checkpoint holds the weights.
    pretraining: Path | None = None

    def store(self, loop: _Loop, gen_state: torch.Tensor, progress: _Progress) -> None:
        if not self.path:
            return
        state = loop_state(loop.model, loop.optimizer, loop.scheduler, gen_state)
        progress_state = {
            "history": progress.history,
            "best": progress.best,
            "epoch": progress.epochs_done,
            "run_id": self.run_id,
        }
        save_atomically({**state, **progress_state}, self.path)
        if self.pretraining:  # the training checkpoint now holds the pretrained weights
            self.pretraining.unlink(missing_ok=True)


def train(
    model_cfg: ViTConfig,
    train_cfg: TrainConfig,
    cache: dict,
    resume_path: str | Path | None = None,
    run_id: str = "",
    timings: dict | None = None,
    pretrained: dict | None = None,
) -> tuple[ViT, pd.DataFrame, dict]:
    """Train on cache['train_x'], select the best epoch on cache['val_x'].

    With train_cfg.pretrain_epochs, training starts from masked-image pretraining: the given
    `pretrained` (a pretrain_encoder() result with the same settings, shared between runs), or
    its own.

    Returns the model holding the best epoch's weights, the per-epoch history and the best
    epoch's validation metrics. A `timings` dict, when given, receives the seconds spent in
    training epochs ("train_s") and, within them, waiting for the next batch ("data_wait_s").
    (Kept out of the history, so that reruns stay byte-identical.)
    """
    loop = _build_loop(model_cfg, train_cfg, cache)
    checkpoints = _Checkpoints(resume_path, run_id)
    progress = _resume(loop, checkpoints)
    _pretrain_unless_resumed(loop, progress, checkpoints, model_cfg, cache, pretrained)
    log.info(
        "training %d parameters on %s: %d train / %d val images, %d epochs",
        sum(p.numel() for p in loop.model.parameters()),
        loop.device,
        len(loop.train_x),
        len(cache["val_x"]),
        train_cfg.epochs,
    )
    spent = _run_epochs(loop, progress, checkpoints, cache["val_x"], cache["val_y"])
    if timings is not None:
        timings.update(spent)
    return _selected_epoch(loop.model, progress, train_cfg)


def _build_loop(model_cfg: ViTConfig, cfg: TrainConfig, cache: dict) -> _Loop:
    """The model (its first weights drawn right after seeding), optimiser, schedule and data."""
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model = ViT(model_cfg).to(device)
    step_model = maybe_compile(model, cfg.compile, device)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, cfg.weight_decay, cfg.selective_weight_decay),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    train_x = torch.as_tensor(np.ascontiguousarray(cache["train_x"]))
    steps = math.ceil(len(train_x) / cfg.batch_size)
    return _Loop(
        cfg=cfg,
        model=model,
        step_model=step_model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg, steps),
        gen=torch.Generator().manual_seed(cfg.seed),
        loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        train_x=train_x,
        train_y=torch.tensor(cache["train_y"], dtype=torch.long),
        mean=float(cache["mean"]),
        std=float(cache["std"]),
        bf16=accelerator.use(cfg.bf16, "bf16", device),
    )


def _resume(loop: _Loop, checkpoints: _Checkpoints) -> _Progress:
    """The progress of this run's checkpoint, its state put back into the loop; a fresh start
    when there is none."""
    state = load_checkpoint(checkpoints.path, checkpoints.run_id, loop.device)
    if state is None:
        return _Progress()
    restore_loop_state(state, loop.model, loop.optimizer, loop.scheduler, loop.gen)
    done = state["epoch"]
    log.info("resumed from %s after epoch %d", checkpoints.path, done)
    return _Progress(state["history"], state["best"], done, done - state["best"]["epoch"])


def _pretrain_unless_resumed(
    loop: _Loop,
    progress: _Progress,
    checkpoints: _Checkpoints,
    model_cfg: ViTConfig,
    cache: dict,
    pretrained: dict | None,
) -> None:
    """Start a fresh run from masked-image pretraining when it pretrains: the given one, or its
    own (checkpointed beside the training checkpoint). A resumed run has its weights."""
    cfg = loop.cfg
    if cfg.pretrain_epochs and pretrained is None and checkpoints.path:
        checkpoints.pretraining = pretraining_checkpoint(checkpoints.path)
    if cfg.pretrain_epochs and progress.epochs_done == 0:
        if pretrained is None:
            pretrained = pretrain_encoder(
                model_cfg,
                cfg,
                cache,
                resume_path=checkpoints.pretraining,
                run_id=checkpoints.run_id,
            )
        else:
            log.info("starting from the given pretraining (%d epochs)", len(pretrained["losses"]))
        _start_from_pretraining(
            loop.model, loop.gen, pretrained, pretraining_identity(model_cfg, cfg)
        )
    elif checkpoints.pretraining:  # left by a kill between the first checkpoint and the unlink
        checkpoints.pretraining.unlink(missing_ok=True)


def _run_epochs(
    loop: _Loop, progress: _Progress, checkpoints: _Checkpoints, val_x, val_y
) -> dict[str, float]:
    """The epochs from where `progress` stands to the last one or an early stop; returns the
    seconds spent training and, within them, waiting for batches."""
    cfg, first = loop.cfg, progress.epochs_done
    spent = {"data_wait_s": 0.0, "train_s": 0.0}
    epoch_seconds = []  # the first one includes torch.compile's compilation
    started = time.perf_counter()
    bar = tqdm(
        range(first, cfg.epochs),
        initial=first,
        total=cfg.epochs,
        desc=checkpoints.run_id or "train",
        mininterval=0,
        ascii=True,
        disable=None,
    )
    gen_state, batches = loop.epoch_batches(first)
    try:
        for epoch in bar:
            epoch_started = time.perf_counter()
            train_loss, train_accuracy, waited = train_epoch(
                loop.step_model,
                batches,
                loop.optimizer,
                loop.scheduler,
                loop.loss_fn,
                cfg.grad_clip,
                epoch,
                loop.bf16,
            )
            train_seconds = time.perf_counter() - epoch_started
            spent["data_wait_s"] += waited
            spent["train_s"] += train_seconds
            epoch_seconds.append(train_seconds)
            close(batches)
            gen_state, batches = loop.epoch_batches(epoch + 1)
            val = evaluate_split(loop.model, val_x, val_y, loop.mean, loop.std, loop.bf16)
            row = {
                "epoch": epoch + 1,
                "lr": loop.scheduler.get_last_lr()[0],
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                **{f"val_{k}": v for k, v in val.items()},
            }
            score = val[cfg.selection_metric]
            progress.record(row, score, loop.model)
            log.info(
                f"epoch {epoch + 1}/{cfg.epochs} loss {train_loss:.4f} "
                f"acc {train_accuracy:.3f} val_loss {val['loss']:.4f} "
                f"val_acc {val['accuracy']:.3f} val_{cfg.selection_metric} {score:.3f} "
                f"data wait {waited / train_seconds:.1%} "
                + time_left(started, epoch + 1 - first, cfg.epochs - epoch - 1)
            )
            checkpoints.store(loop, gen_state, progress)
            if cfg.patience and progress.stale >= cfg.patience:
                log.info(
                    "early stop: no better val_%s for %d epochs",
                    cfg.selection_metric,
                    progress.stale,
                )
                break
    finally:
        close(batches)
    bar.close()
    log_device_figures(epoch_seconds, loop.device)
    return spent


def log_device_figures(epoch_seconds: list[float], device: torch.device) -> None:
    """One line that benchmarks/pipeline_figures.py reads: the first epoch's training time
    (torch.compile compiles in it) beside the median of the others, and the peak GPU memory."""
    if not epoch_seconds:
        return
    later = float(np.median(epoch_seconds[1:])) if len(epoch_seconds) > 1 else float("nan")
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    log.info(
        "device figures: first epoch %.2f s, later epochs median %.2f s, peak GPU memory %.0f MiB",
        epoch_seconds[0],
        later,
        peak,
    )


def _selected_epoch(model: ViT, progress: _Progress, cfg: TrainConfig):
    """(model, history, validation row) of the best epoch, or of the last one when training
    keeps the model as it left it (select_best_epoch false)."""
    history = pd.DataFrame(progress.history)
    if not cfg.select_best_epoch:
        return model, history, progress.history[-1]
    model.load_state_dict(progress.best["state"])
    best_row = next(r for r in progress.history if r["epoch"] == progress.best["epoch"])
    return model, history, best_row


def train_epoch(model, batches, optimizer, scheduler, loss_fn, grad_clip, epoch, bf16=True):
    """One pass over `batches`: (mean loss, accuracy, seconds spent waiting for batches)."""
    model.train()
    device = next(model.parameters()).device
    total_loss = correct = seen = waited = 0.0
    step, wait_started = 0, time.perf_counter()
    for step, (x, y) in enumerate(batches, start=1):
        waited += time.perf_counter() - wait_started
        with autocast(device, bf16):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        where = f"at epoch {epoch + 1}, batch {step}"
        optimisation_step(loss, optimizer, scheduler, model.parameters(), grad_clip, "loss", where)
        total_loss += loss.item() * len(y)
        labels = y if y.ndim == 1 else y.argmax(1)  # CutMix targets: the larger share
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(y)
        wait_started = time.perf_counter()
    return total_loss / seen, correct / seen, waited


@torch.no_grad()
def evaluate_split(model, images, labels, mean, std, bf16: bool = True) -> dict:
    """Validation loss (unsmoothed NLL) and metrics."""
    prob = predict_proba(model, images, mean, std, bf16=bf16)
    p = np.clip(prob, 1e-7, 1 - 1e-7)
    y = np.asarray(labels)
    nll = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return {"loss": nll, **binary_metrics(y, prob)}


def _cpu_state(model) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
