"""Share of a training job's time spent waiting for data (batch assembly, standardisation,
augmentation) rather than training the model, with and without the prefetch thread.

    python benchmarks/data_wait.py [--patches 8 16 32] [--image-size 224] [--epochs 3]

Trains one grid job per patch size on synthetic slices preprocessed in memory (by default as
many training images as the real data's split: 1,372), as a sweep job does (the preprocessing
cache is loaded once; no job decodes PNGs). The training loop itself times how long each step
waits for its batch (`vitct.training.loop.train(timings=...)`, also written to every training log).
Prints the share for `training.prefetch: false` (the batch is built in the training thread, so
its whole cost is waited for) and `true` (the default: the next batch is built in a background
thread during the current step), the job's wall and CPU time for each, and checks that both
give identical training histories. Target: at most 5 %.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from common import demo_cache

import vitct.training.loop as training
from vitct.model.settings import ViTConfig
from vitct.pipeline.harness import configure_threads
from vitct.training.settings import TrainConfig


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(patch: int, prefetch: bool, cache: dict, args) -> tuple[dict, object]:
    timings: dict = {}
    wall, cpu = time.perf_counter(), cpu_seconds()
    _, history, _ = training.train(
        ViTConfig(image_size=args.image_size, patch_size=patch, dropout=0.3),
        TrainConfig(epochs=args.epochs, batch_size=64, prefetch=prefetch),
        cache,
        timings=timings,
    )
    timings["wall_s"] = time.perf_counter() - wall
    timings["cpu_s"] = cpu_seconds() - cpu
    return timings, history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-per-class", type=int, default=980)
    args = parser.parse_args()
    configure_threads(torch, args.threads)
    cache = demo_cache(args.n_per_class, args.image_size)
    print(
        f"one grid job per patch: {args.image_size}px, {args.epochs} epochs, "
        f"{len(cache['train_x'])} train images, batch 64, {args.threads} torch thread(s)"
    )
    print(f"{'patch':>5} {'prefetch':>8} {'wait':>7} {'epochs s':>9} {'wall s':>7} {'cpu/wall':>8}")
    for patch in args.patches:
        histories = []
        for prefetch in (False, True):
            t, history = run(patch, prefetch, cache, args)
            histories.append(history)
            print(
                f"{patch:>5} {str(prefetch):>8} {t['data_wait_s'] / t['train_s']:>7.1%} "
                f"{t['train_s']:>9.1f} {t['wall_s']:>7.1f} {t['cpu_s'] / t['wall_s']:>8.2f}"
            )
        same = histories[0].equals(histories[1])
        print(f"{patch:>5} identical training history with and without prefetch: {same}")
    print("target: wait <= 5% of the training epochs")


if __name__ == "__main__":
    main()
