"""Training speed of the convolutional tokenizer's weight layout: channels-last against the
default (contiguous) layout, measured side by side in one run.

    python benchmarks/conv_stem_layout.py --threads 2

The model has the shape of real-cpu-128px.yaml's final model (128 px, conv tokenizer, patch
16, depth 6, width 64) with 4 heads, where the real data's sweep picked 1: heads do not touch
the tokenizer, whose four 3x3 convolutions at 128, 64, 32 and 16 px are most of its compute.
Each round times full AdamW training steps of both layouts in turn; the ratio is the median
over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT

CONFIG = ViTConfig(
    image_size=128,
    patch_size=16,
    embed_dim=64,
    depth=6,
    heads=4,
    mlp_ratio=2.0,
    dropout=0.1,
    drop_path=0.1,
    tokenizer="conv",
    pooling="seq",
)


def build(layout: torch.memory_format):
    torch.manual_seed(0)
    model = ViT(CONFIG)
    model.patch_embed.proj.to(memory_format=layout)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def seconds_per_step(model, optimizer, x, y, steps: int) -> float:
    model.train()
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 1, CONFIG.image_size, CONFIG.image_size)
    y = torch.randint(0, 2, (args.batch,))
    layouts = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    runs = {name: build(layout) for name, layout in layouts.items()}
    for model, optimizer in runs.values():  # warm-up: allocator and oneDNN kernel choice
        seconds_per_step(model, optimizer, x, y, 1)
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (model, optimizer) in runs.items():
            times[name].append(seconds_per_step(model, optimizer, x, y, args.steps))
    ratios = [c / cl for c, cl in zip(times["contiguous"], times["channels_last"], strict=True)]
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, 128 px")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:>14}: {median * 1000:7.0f} ms/step  {args.batch / median:6.1f} images/s")
    speedup = statistics.median(ratios)
    print(f"channels_last speed-up: {speedup:.2f}x (median of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
