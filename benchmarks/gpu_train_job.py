"""Train one grid job on CUDA and print images/s and peak GPU memory (a few minutes on one GPU).

    python benchmarks/gpu_train_job.py [--patch 8] [--image-size 224] [--epochs 3]
                                       [--compile auto|always|never] [--bf16 auto|always|never]
                                       [--cpu-check] [--json FILE]

Uses synthetic demo slices preprocessed in memory, so it needs no data download. Prints the
throughput of the training loop (bf16 autocast on CUDA, as the pipeline uses) and the peak GPU
memory; with --cpu-check it also trains the same job on the CPU for one epoch and prints both
paths' validation metrics, which should agree closely. Run it with --compile never and with
--compile always to see what torch.compile buys on that GPU (auto, the pipeline's default,
compiles on CUDA unless vitct.training.accelerator.MEASURED says otherwise), and with --bf16 never
against always for what bf16 autocast buys. --json writes the figures to a file as well
(benchmarks/gpu_pipeline.sh gathers them).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import demo_cache

from vitct.model.settings import ViTConfig
from vitct.training.loop import train
from vitct.training.settings import TrainConfig


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
    parser.add_argument("--bf16", choices=["auto", "always", "never"], default="auto")
    parser.add_argument("--cpu-check", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    cache = demo_cache(args.n_per_class, args.image_size)
    model_cfg = ViTConfig(
        image_size=args.image_size, patch_size=args.patch, heads=args.heads, dropout=args.dropout
    )
    train_cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch,
        device="cuda",
        compile=args.compile,
        bf16=args.bf16,
    )
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    _, history, best = train(model_cfg, train_cfg, cache)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    images = args.epochs * len(cache["train_x"])
    figures = {
        "gpu": torch.cuda.get_device_name(),
        **{k: v for k, v in vars(args).items() if k != "json"},
        "seconds": round(elapsed, 2),
        "images_per_s": round(images / elapsed, 1),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
        "cuda_val_accuracy": best["val_accuracy"],
        "cuda_val_mcc": best["val_mcc"],
    }
    print(
        f"{figures['gpu']}: patch {args.patch}, {args.image_size}px, batch "
        f"{args.batch}, compile {args.compile}, bf16 {args.bf16}: {figures['images_per_s']:.0f} "
        f"images/s over {args.epochs} epochs (validation and compilation included), "
        f"peak GPU memory {figures['peak_gpu_mib']} MiB"
    )
    print(f"CUDA best validation: accuracy {best['val_accuracy']:.4f}, mcc {best['val_mcc']:.4f}")
    if args.cpu_check:
        cpu_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, device="cpu")
        _, _, cpu_best = train(model_cfg, cpu_cfg, cache)
        figures.update(cpu_val_accuracy=cpu_best["val_accuracy"], cpu_val_mcc=cpu_best["val_mcc"])
        print(
            f"CPU  best validation: accuracy {cpu_best['val_accuracy']:.4f}, "
            f"mcc {cpu_best['val_mcc']:.4f}"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
