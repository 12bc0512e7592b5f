"""What training and pretraining share: the optimiser's parameter groups, the optimisation step,
the learning-rate schedule and the time-left stamp of their epoch logs."""

from __future__ import annotations

import math
import time

import torch
from tqdm import tqdm

from vitct.errors import UserError


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite; the message says what to change."""


def parameter_groups(model: torch.nn.Module, weight_decay: float, selective: bool = True):
    """AdamW's parameters. With `selective` (nanoGPT's configure_optimizers, timm's
    no_weight_decay), weight decay reaches weight matrices and conv kernels only: biases and norm
    scales (fewer than two dimensions) and the names in the model's no_weight_decay() (position
    embeddings, tokens) are not pulled towards zero. Without it, every parameter decays."""
    if not selective:
        return model.parameters()
    exempt = getattr(model, "no_weight_decay", set)()
    decay, keep = [], []
    for name, parameter in model.named_parameters():
        (keep if parameter.ndim < 2 or name in exempt else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]


def warmup_cosine(optimizer, warmup: int, total: int, constant: bool = False):
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `total` (or constant)."""
    total = max(total, warmup + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if constant:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimisation_step(
    loss, optimizer, scheduler, parameters, grad_clip: float, name: str, where: str
):
    """Backward, clip, step; a non-finite loss stops naming the loss, `where`, and what to change
    (the message is only formatted then, off the hot path)."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"{name} became {loss.item()} {where}: lower training.lr, raise "
            "training.warmup_epochs or keep training.grad_clip > 0"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
    scheduler.step()


def time_left(started: float, epochs_done: int, epochs_left: int) -> str:
    """The log's "[elapsed, ~left]" suffix, from the pace of the epochs run since `started`
    (a resumed run times only its own epochs)."""
    elapsed = time.perf_counter() - started
    left = elapsed / max(epochs_done, 1) * epochs_left
    return f"[{tqdm.format_interval(elapsed)} elapsed, ~{tqdm.format_interval(left)} left]"
