"""Train one grid job on CUDA and print images/s and peak GPU memory (a few minutes on one GPU).

    python benchmarks/gpu_train_job.py [--patch 8] [--image-size 224] [--epochs 3]
                                       [--compile auto|always|never] [--cpu-check]

Uses synthetic demo slices preprocessed in memory, so it needs no data download. Prints the
throughput of the training loop (bf16 autocast on CUDA, as the pipeline uses) and the peak GPU
memory; with --cpu-check it also trains the same job on the CPU for one epoch and prints both
paths' validation metrics, which should agree closely. Run it with --compile never and with
--compile always to see what torch.compile buys on that GPU (auto, the pipeline's default,
compiles on CUDA).
"""

from __future__ import annotations

import argparse
import time

import torch
from common import demo_cache

from vitct.settings import TrainConfig, ViTConfig
from vitct.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n-per-class", type=int, default=600)
    parser.add_argument("--compile", choices=["auto", "always", "never"], default="auto")
    parser.add_argument("--cpu-check", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    cache = demo_cache(args.n_per_class, args.image_size)
    model_cfg = ViTConfig(
        image_size=args.image_size, patch_size=args.patch, heads=args.heads, dropout=args.dropout
    )
    train_cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch, device="cuda", compile=args.compile
    )
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    _, history, best = train(model_cfg, train_cfg, cache)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    images = args.epochs * len(cache["train_x"])
    print(
        f"{torch.cuda.get_device_name()}: patch {args.patch}, {args.image_size}px, batch "
        f"{args.batch}, compile {args.compile}: {images / elapsed:.0f} images/s over "
        f"{args.epochs} epochs (validation and compilation included), "
        f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    )
    print(f"CUDA best validation: accuracy {best['val_accuracy']:.4f}, mcc {best['val_mcc']:.4f}")
    if args.cpu_check:
        cpu_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, device="cpu")
        _, _, cpu_best = train(model_cfg, cpu_cfg, cache)
        print(
            f"CPU  best validation: accuracy {cpu_best['val_accuracy']:.4f}, "
            f"mcc {cpu_best['val_mcc']:.4f}"
        )


if __name__ == "__main__":
    main()
