"""The training loop: AdamW with warm-up and cosine decay, augmentation, best-epoch selection,
early stopping, a checkpoint every epoch and resumption from it after an interruption."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from vitct import accelerator
from vitct.batches import Prefetcher, close, epoch_batches
from vitct.checkpoint import (
    load_checkpoint,
    loop_state,
    pretraining_checkpoint,
    restore_loop_state,
    save_atomically,
)
from vitct.data import normalise
from vitct.metrics import binary_metrics
from vitct.model import ViT
from vitct.optim import optimisation_step, time_left, warmup_cosine
from vitct.pretrain import PretrainingMismatchError, pretrain
from vitct.settings import TrainConfig, ViTConfig, pretraining_identity

log = logging.getLogger("vitct.train")


def configure_threads(threads: int) -> None:
    """Make torch use exactly the job's threads, so parallel jobs never oversubscribe."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


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


@torch.no_grad()
def predict_proba(
    model: ViT, images: np.ndarray, mean: float, std: float, batch: int = 256, bf16: bool = True
):
    """COVID probability for each uint8 (N, H, W) image (`bf16` autocast on CUDA only)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch):
        x = normalise(images[i : i + batch], mean, std).to(device)
        with _autocast(device, bf16):
            logits = model(x)
        out.append(logits.float().softmax(dim=1)[:, 1].cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def _autocast(device: torch.device, bf16: bool = True):
    # bf16 autocast on CUDA only (training.bf16): same numerics class as fp32 for this model.
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


def fingerprint(model_cfg: ViTConfig, train_cfg: TrainConfig, *data_paths: str | Path) -> str:
    """Identity of a training run, so a stale checkpoint is never resumed."""
    stats = [(Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p in data_paths]
    payload = json.dumps([model_cfg.to_dict(), train_cfg.__dict__, stats], sort_keys=True)
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

    Pretrains on the unlabelled train and validation scans, never the test split. With
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
    seed_everything(train_cfg.seed)
    device = pick_device(train_cfg.device)
    model = ViT(model_cfg).to(device)
    step_model = maybe_compile(model, train_cfg.compile, device)  # shares model's weights
    bf16 = accelerator.use(train_cfg.bf16, "bf16", device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay
    )
    train_x = torch.as_tensor(np.ascontiguousarray(cache["train_x"]))
    train_y = torch.tensor(cache["train_y"], dtype=torch.long)
    mean, std = float(cache["mean"]), float(cache["std"])
    steps = math.ceil(len(train_x) / train_cfg.batch_size)
    scheduler = build_scheduler(optimizer, train_cfg, steps)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=train_cfg.label_smoothing)

    history, best, start_epoch = [], {"score": -math.inf, "epoch": 0, "state": None}, 0
    stale = 0
    state = load_checkpoint(resume_path, run_id, device)
    if state is not None:
        restore_loop_state(state, model, optimizer, scheduler, gen)
        history, best, start_epoch = state["history"], state["best"], state["epoch"]
        stale = start_epoch - best["epoch"]  # epochs since the best, for early stopping
        log.info("resumed from %s after epoch %d", resume_path, start_epoch)

    # A run that pretrains for itself checkpoints that beside the training checkpoint, until
    # the training checkpoint holds the weights.
    pretrain_resume = None
    if train_cfg.pretrain_epochs and pretrained is None and resume_path:
        pretrain_resume = pretraining_checkpoint(resume_path)
    if train_cfg.pretrain_epochs and start_epoch == 0:  # a resumed run has its weights
        if pretrained is None:
            pretrained = pretrain_encoder(
                model_cfg, train_cfg, cache, resume_path=pretrain_resume, run_id=run_id
            )
        else:
            log.info("starting from the given pretraining (%d epochs)", len(pretrained["losses"]))
        _start_from_pretraining(model, gen, pretrained, pretraining_identity(model_cfg, train_cfg))
    elif pretrain_resume:  # left behind by a kill between the first checkpoint and the unlink
        pretrain_resume.unlink(missing_ok=True)
    log.info(
        "training %d parameters on %s: %d train / %d val images, %d epochs",
        sum(p.numel() for p in model.parameters()),
        device,
        len(train_x),
        len(cache["val_x"]),
        train_cfg.epochs,
    )
    started = time.perf_counter()
    bar = tqdm(
        range(start_epoch, train_cfg.epochs),
        initial=start_epoch,
        total=train_cfg.epochs,
        desc=run_id or "train",
        mininterval=0,
        ascii=True,
        disable=None,
    )
    timings_run = {"data_wait_s": 0.0, "train_s": 0.0}
    epoch_seconds = []  # the first one includes torch.compile's compilation

    def next_epoch_batches(epoch: int):
        """(generator state before the epoch's draws, the epoch's batches). Started before
        the previous epoch's validation, so the prefetch thread has the first batch ready."""
        state = gen.get_state()
        if epoch >= train_cfg.epochs:
            return state, ()
        batches = epoch_batches(train_x, train_y, train_cfg, mean, std, device, gen, epoch)
        return state, Prefetcher(batches) if train_cfg.prefetch else batches

    gen_state, batches = next_epoch_batches(start_epoch)
    try:
        for epoch in bar:
            epoch_started = time.perf_counter()
            train_loss, train_accuracy, waited = train_epoch(
                step_model,
                batches,
                optimizer,
                scheduler,
                loss_fn,
                train_cfg.grad_clip,
                epoch,
                bf16,
            )
            train_seconds = time.perf_counter() - epoch_started
            timings_run["data_wait_s"] += waited
            timings_run["train_s"] += train_seconds
            epoch_seconds.append(train_seconds)
            close(batches)
            gen_state, batches = next_epoch_batches(epoch + 1)
            val = evaluate_split(model, cache["val_x"], cache["val_y"], mean, std, bf16)
            row = {
                "epoch": epoch + 1,
                "lr": scheduler.get_last_lr()[0],
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                **{f"val_{k}": v for k, v in val.items()},
            }
            history.append(row)
            score = val[train_cfg.selection_metric]
            if score > best["score"]:  # strictly better: ties keep the earlier epoch
                best = {"score": score, "epoch": epoch + 1, "state": _cpu_state(model)}
                stale = 0
            else:
                stale += 1
            log.info(
                f"epoch {epoch + 1}/{train_cfg.epochs} loss {train_loss:.4f} "
                f"acc {train_accuracy:.3f} val_loss {val['loss']:.4f} "
                f"val_acc {val['accuracy']:.3f} val_{train_cfg.selection_metric} {score:.3f} "
                f"data wait {waited / train_seconds:.1%} "
                + time_left(started, epoch + 1 - start_epoch, train_cfg.epochs - epoch - 1)
            )
            if resume_path:
                _save_resume(
                    resume_path,
                    model,
                    optimizer,
                    scheduler,
                    gen_state,
                    history,
                    best,
                    epoch + 1,
                    run_id,
                )
                if pretrain_resume:  # the training checkpoint now holds the pretrained weights
                    pretrain_resume.unlink(missing_ok=True)
            if train_cfg.patience and stale >= train_cfg.patience:
                log.info(
                    "early stop: no better val_%s for %d epochs",
                    train_cfg.selection_metric,
                    stale,
                )
                break
    finally:
        close(batches)
    bar.close()
    log_device_figures(epoch_seconds, device)
    if timings is not None:
        timings.update(timings_run)
    if not train_cfg.select_best_epoch:  # the model as training left it
        return model, pd.DataFrame(history), history[-1]
    model.load_state_dict(best["state"])
    best_row = next(r for r in history if r["epoch"] == best["epoch"])
    return model, pd.DataFrame(history), best_row


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


def train_epoch(model, batches, optimizer, scheduler, loss_fn, grad_clip, epoch, bf16=True):
    """One pass over `batches`: (mean loss, accuracy, seconds spent waiting for batches)."""
    model.train()
    device = next(model.parameters()).device
    total_loss = correct = seen = waited = 0.0
    step, wait_started = 0, time.perf_counter()
    for step, (x, y) in enumerate(batches, start=1):
        waited += time.perf_counter() - wait_started
        with _autocast(device, bf16):
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


def _save_resume(path, model, optimizer, scheduler, gen_state, history, best, epoch, run_id):
    state = loop_state(model, optimizer, scheduler, gen_state)
    save_atomically(
        {**state, "history": history, "best": best, "epoch": epoch, "run_id": run_id}, path
    )
