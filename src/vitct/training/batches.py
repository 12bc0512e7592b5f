"""The training data path: batches of one epoch, augmentation, and prefetching the next batch
in a background thread while the model trains on this one."""

from __future__ import annotations

import math
import queue
import threading

import torch
import torch.nn.functional as F

from vitct.data.classes import CLASS_NAMES
from vitct.model.input_tensors import normalise, standardise, unit_range
from vitct.training.appearance import appearance_augment
from vitct.training.settings import TrainConfig


def augment(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random affine (rotation, zoom, shift), flips and intensity jitter.

    Done as one batched `affine_grid`/`grid_sample` so each image gets its own parameters at the
    cost of a single kernel call, instead of a Python loop over torchvision transforms.
    """
    b = x.shape[0]

    def uniform(lo, hi):
        return torch.rand(b, generator=gen, device=gen.device).to(x.device) * (hi - lo) + lo

    angle = uniform(-cfg.rotate_degrees, cfg.rotate_degrees) * math.pi / 180
    scale = uniform(1 - cfg.scale_range, 1 + cfg.scale_range)
    flip = (
        torch.where(uniform(0, 1) < 0.5, -1.0, 1.0) if cfg.hflip else torch.ones(b, device=x.device)
    )
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, uniform(-cfg.translate, cfg.translate) * 2], 1),
            torch.stack([sin * flip, cos, uniform(-cfg.translate, cfg.translate) * 2], 1),
        ],
        1,
    )
    grid = affine_grid(theta, x.shape[-2], x.shape[-1])
    # Border padding repeats the edge (air around the body), never zero, which is mid-grey
    # after standardisation.
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="border")
    j = cfg.intensity_jitter
    gain = uniform(1 - j, 1 + j).view(b, 1, 1, 1)
    bias = uniform(-j, j).view(b, 1, 1, 1)
    return torch.addcmul(bias, x, gain)  # x * gain + bias in one pass


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """F.affine_grid(theta, (n, c, h, w), align_corners=False), written out: the same grid,
    5x faster on the CPU, where affine_grid's batched matmul dominated augmentation."""
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1
    grid = torch.empty(theta.shape[0], h, w, 2, device=theta.device, dtype=theta.dtype)
    for k in range(2):  # x then y: theta[:, k] . (x, y, 1)
        t = theta[:, k, :, None, None]
        grid[..., k] = t[:, 0] * xs + (t[:, 1] * ys[:, None] + t[:, 2])
    return grid


def cutmix_share(cfg: TrainConfig, epoch: int) -> float:
    """The share of CutMix batches in (0-based) `epoch`: none in the last cfg.cutmix_off_epochs.

    A model that only ever sees mixed scans fits whole ones loosely; unmixed epochs at the low end
    of the learning-rate decay fit them firmly on the features CutMix shaped (on the real data
    that did not raise accuracy: docs/experiments.md)."""
    return 0.0 if epoch >= cfg.epochs - cfg.cutmix_off_epochs else cfg.cutmix


def epoch_batches(train_x, train_y, cfg: TrainConfig, mean, std, device, gen, epoch: int = 0):
    """One epoch of standardised (and augmented) training batches, in a random order."""
    share = cutmix_share(cfg, epoch)
    order = torch.randperm(len(train_x), generator=gen)
    for i in range(0, len(order), cfg.batch_size):
        idx = order[i : i + cfg.batch_size]
        if cfg.appearance:  # on grey levels in [0, 1], so before standardisation
            x = unit_range(train_x[idx]).to(device, non_blocking=True)
            x = standardise(appearance_augment(x, cfg, gen), mean, std)
        else:
            x = normalise(train_x[idx], mean, std).to(device, non_blocking=True)
        y = train_y[idx].to(device, non_blocking=True)
        if cfg.augment:  # on the training device: a GPU warps the batch itself
            x = augment(x, cfg, gen)
        if share and torch.rand(1, generator=gen).item() < share:
            x, y = cutmix(x, y, gen)
        yield x, y


def cutmix(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
    """CutMix (Yun et al. 2019, alpha 1): paste one random box from a shuffled copy of the batch
    into every image; the labels become class probabilities weighted by each image's share of
    the pixels. Returns the mixed images and (B, classes) soft targets.
    """
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    keep, cy, cx = torch.rand(3, generator=gen).tolist()  # keep ~ Beta(1, 1) = uniform
    bh, bw = round(h * math.sqrt(1 - keep)), round(w * math.sqrt(1 - keep))
    top, left = int(cy * h), int(cx * w)  # the box's centre, clipped at the edges
    y0, y1 = max(top - bh // 2, 0), min(top + bh - bh // 2, h)
    x0, x1 = max(left - bw // 2, 0), min(left + bw - bw // 2, w)
    perm = torch.randperm(b, generator=gen).to(x.device)
    x = x.clone()
    x[..., y0:y1, x0:x1] = x[perm, ..., y0:y1, x0:x1]  # gathers the box only
    pasted = (y1 - y0) * (x1 - x0) / (h * w)
    onehot = F.one_hot(y, len(CLASS_NAMES)).float()
    return x, (1 - pasted) * onehot + pasted * onehot[perm]


class Prefetcher:
    """Iterate `batches` one item ahead in a background thread, so the next batch is built
    while the model trains on this one (torch releases the GIL in both).

    Only this thread draws from the augmentation generator, in the same order as without
    prefetching, so results are identical either way. One Prefetcher per epoch: when the epoch
    ends the thread has finished, and the generator state saved in the checkpoint is exact.
    """

    _DONE = object()

    def __init__(self, batches):
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(batches,), daemon=True)
        self._thread.start()

    def _fill(self, batches) -> None:
        try:
            for item in batches:
                if not self._put(item):
                    return
        except BaseException as error:  # re-raised in the training thread
            self._put(error)
            return
        self._put(self._DONE)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._DONE:
            self._thread.join()
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the thread early (training raised or stopped mid-epoch)."""
        self._stop.set()
        self._thread.join()


def close(batches) -> None:
    """Stop a Prefetcher's thread; plain iterables need nothing."""
    if isinstance(batches, Prefetcher):
        batches.close()
