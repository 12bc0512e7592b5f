"""Share of a training job's time spent on the data path (batch assembly, standardisation,
augmentation) rather than on the model.

    python benchmarks/data_wait.py [--patch 16] [--image-size 224] [--epochs 2] [--threads 1]

Trains one grid job on synthetic slices preprocessed in memory, as a sweep job does (the
preprocessing cache is loaded once; no job decodes PNGs), and times every call of the data
functions the training loop makes. Target: at most 5 % of the job.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import demo_cache

import vitct.train as training
from vitct.settings import TrainConfig, ViTConfig


def timed(function, totals: dict, key: str):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        result = function(*args, **kwargs)
        totals[key] += time.perf_counter() - started
        return result

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-per-class", type=int, default=300)
    args = parser.parse_args()
    training.configure_threads(args.threads)
    cache = demo_cache(args.n_per_class, args.image_size)
    totals = {"normalise": 0.0, "augment": 0.0, "randperm": 0.0}
    training.normalise = timed(training.normalise, totals, "normalise")
    training.augment = timed(training.augment, totals, "augment")
    real_randperm = torch.randperm
    torch.randperm = timed(real_randperm, totals, "randperm")
    try:
        started = time.perf_counter()
        training.train(
            ViTConfig(image_size=args.image_size, patch_size=args.patch, dropout=0.3),
            TrainConfig(epochs=args.epochs, batch_size=64),
            cache,
        )
        total = time.perf_counter() - started
    finally:
        torch.randperm = real_randperm
    data = sum(totals.values())
    print(
        f"training job: patch {args.patch}, {args.image_size}px, {args.epochs} epochs, "
        f"{len(cache['train_x'])} train images, {args.threads} thread(s): {total:.1f} s"
    )
    print("data path: " + ", ".join(f"{k} {v:.2f} s" for k, v in totals.items()))
    print(f"share of the job spent on the data path: {data / total:.1%} (target <= 5%)")


if __name__ == "__main__":
    main()
