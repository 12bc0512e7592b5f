"""Accuracy with dropout where vitct puts it against dropout on the attention weights too (the
original study's placement, and timm's attn_drop_rate), trained side by side on the same split.

    python benchmarks/dropout_placement.py [--data FOLDER] [--image-size 64] [--seeds 0 1 2]

vitct drops activations on the embeddings, the attention output projection and the MLP, never
the attention weights: that keeps the fused attention kernel on the CPU (see
benchmarks/throughput_vs_timm.py). This script shows what the placement costs in accuracy: for
each seed, the same model, data, split and schedule is trained with `attn_dropout: 0` (vitct)
and `attn_dropout: dropout` (study), and the test accuracy and MCC of the best validation epoch
are printed with their mean and the mean of the paired differences. --data takes a folder in
the Kaggle layout (COVID/, non-COVID/), e.g. ../shared/data/sarscov2-ct; without it, generated
demo slices are used.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import demo_cache, folder_cache

from vitct.evaluation.metrics import binary_metrics
from vitct.model.inference import predict_proba
from vitct.model.settings import ViTConfig
from vitct.pipeline.harness import configure_threads
from vitct.training.loop import train
from vitct.training.settings import TrainConfig

PLACEMENTS = ("vitct", "study")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder in the Kaggle layout; default: demo slices")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    configure_threads(torch, args.threads)
    cache = (
        folder_cache(args.data, args.image_size) if args.data else demo_cache(300, args.image_size)
    )
    print(
        f"data: {args.data or 'demo slices'}, {args.image_size}px, patch {args.patch}, heads "
        f"{args.heads}, dropout {args.dropout}, {args.epochs} epochs; "
        f"{len(cache['train_y'])} train / {len(cache['val_y'])} val / {len(cache['test_y'])} test"
    )
    print(f"{'seed':>4} {'placement':>9} {'test acc':>8} {'test mcc':>8} {'seconds':>7}")
    scores = {p: {"accuracy": [], "mcc": []} for p in PLACEMENTS}
    for seed in args.seeds:
        for placement in PLACEMENTS:
            model_cfg = ViTConfig(
                image_size=args.image_size,
                patch_size=args.patch,
                heads=args.heads,
                dropout=args.dropout,
                attn_dropout=args.dropout if placement == "study" else 0.0,
            )
            started = time.perf_counter()
            model, _, _ = train(model_cfg, TrainConfig(epochs=args.epochs, seed=seed), cache)
            prob = predict_proba(model, cache["test_x"], cache["mean"], cache["std"])
            test = binary_metrics(cache["test_y"], prob)
            for key in ("accuracy", "mcc"):
                scores[placement][key].append(test[key])
            print(
                f"{seed:>4} {placement:>9} {test['accuracy']:>8.4f} {test['mcc']:>8.4f} "
                f"{time.perf_counter() - started:>7.1f}"
            )
    for key in ("accuracy", "mcc"):
        ours, theirs = scores["vitct"][key], scores["study"][key]
        diff = statistics.mean(a - b for a, b in zip(ours, theirs, strict=True))
        print(
            f"test {key}: vitct placement {statistics.mean(ours):.4f}, study placement "
            f"{statistics.mean(theirs):.4f}, mean paired difference {diff:+.4f}"
        )


if __name__ == "__main__":
    main()
