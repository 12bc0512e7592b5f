"""Checkpoints that survive a kill: written atomically, and resumed only by the run that
wrote them (a run identity is stored with each), so a stale one is never picked up."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vitct.atomic_files import write_output

log = logging.getLogger(__name__)


def save_atomically(obj, path: str | Path) -> None:
    """torch.save, whole or not at all: a kill or a full disk mid-write leaves the old file."""
    write_output(path, lambda f: torch.save(obj, f))


def pretraining_checkpoint(beside: str | Path) -> Path:
    """Where a pretraining checkpoints: beside its output, or beside the training checkpoint of
    a run that pretrains for itself."""
    return Path(beside).with_name("pretrain_resume.pt")


def load_checkpoint(path: str | Path | None, run_id: str, device) -> dict | None:
    """The checkpoint at `path` when the run `run_id` wrote it; None when there is none or it
    is another run's (that one is ignored, and overwritten by this run's first checkpoint)."""
    if not path or not Path(path).exists():
        return None
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("run_id") != run_id:
        log.info("ignoring checkpoint %s from a different run", path)
        return None
    return state


def loop_state(model, optimizer, scheduler, generator_state: torch.Tensor) -> dict:
    """What a training loop needs to go on exactly where it stopped; the caller adds its own
    progress (epoch, losses) and the run identity. `generator_state` is the data generator's
    state before the next epoch's draws."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator_state,
        "torch_rng": torch.get_rng_state(),  # dropout and stochastic depth draw from it
    }


def restore_loop_state(state: dict, model, optimizer, scheduler, generator) -> None:
    """Put a loop_state() back into the loop's objects."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
