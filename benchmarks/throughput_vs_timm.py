"""Training throughput of vitct's ViT against timm's VisionTransformer, side by side.

    python benchmarks/throughput_vs_timm.py [--patches 8 16 32] [--image-size 224] [--rounds 3]
                                            [--compile] [--device cuda]

Both models get the same patch size, width, depth, heads, MLP ratio, one input channel, batch
and dropout rate, and train with AdamW on the same random batch. Each measurement runs in a
fresh child process (so its peak resident memory is its own), in the order ours, timm, ours,
timm, ...; the ratio is taken pair by pair and its median printed, so drift in the machine's
speed cancels out.

Where dropout acts: vitct applies it to the embeddings, the attention output projection and the
MLP, and not to the attention weights; the fused scaled_dot_product_attention kernel then stays
in use on the CPU. timm is measured twice: as the original study placed dropout (on the
attention weights too: timm's attn_drop_rate, like Keras' MultiHeadAttention dropout), and with
attn_drop_rate=0 (the same placement as ours) for reference. With --compile, vitct under
torch.compile is measured too (its compile time is excluded: it happens in the warm-up step).
With --device cuda both train on the GPU under bf16 autocast (as the pipeline does there), and
the peak memory column is the GPU's (torch.cuda.max_memory_allocated).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("vitct", "timm", "timm-no-attn-drop")
COMPILED = "vitct-compiled"


def build(variant: str, patch: int, args) -> torch.nn.Module:  # noqa: F821
    if variant in ("vitct", COMPILED):
        from vitct.model.settings import ViTConfig
        from vitct.model.vit import ViT

        return ViT(
            ViTConfig(
                image_size=args.image_size,
                patch_size=patch,
                embed_dim=args.width,
                depth=args.depth,
                heads=args.heads,
                mlp_ratio=args.mlp_ratio,
                dropout=args.dropout,
            )
        )
    from timm.models.vision_transformer import VisionTransformer

    attn_drop = 0.0 if variant == "timm-no-attn-drop" else args.dropout
    return VisionTransformer(
        img_size=args.image_size,
        patch_size=patch,
        in_chans=1,
        num_classes=2,
        embed_dim=args.width,
        depth=args.depth,
        num_heads=args.heads,
        mlp_ratio=args.mlp_ratio,
        drop_rate=args.dropout,
        proj_drop_rate=args.dropout,
        attn_drop_rate=attn_drop,
    )


def measure(variant: str, patch: int, args) -> dict:
    """Images per second of full training steps (forward, backward, AdamW) in this process."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build(variant, patch, args).train().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if variant == COMPILED:
        model = torch.compile(model, dynamic=False)
    x = torch.randn(args.batch, 1, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 2, (args.batch,), device=device)
    on_gpu = device.type == "cuda"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
            logits = model(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        optimizer.step()
        if on_gpu:
            torch.cuda.synchronize()

    step()  # warm-up: allocator, kernel selection
    steps, started = 0, time.perf_counter()
    while steps < args.min_steps or time.perf_counter() - started < args.min_seconds:
        step()
        steps += 1
    elapsed = time.perf_counter() - started
    return {
        "images_per_s": steps * args.batch / elapsed,
        "peak_rss_mb": torch.cuda.max_memory_allocated() / 2**20
        if on_gpu
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def run_child(variant: str, patch: int, argv: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, str(patch), *argv],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--mlp-ratio", type=float, default=2.0)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-steps", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--compile", action="store_true", help=f"also measure {COMPILED}")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "PATCH"))
    args, _ = parser.parse_known_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args)))
        return
    argv = [a for a in sys.argv[1:]]
    print(
        f"training step, batch {args.batch}, {args.image_size}px, width {args.width}, depth "
        f"{args.depth}, heads {args.heads}, dropout {args.dropout}, {args.threads} threads, "
        f"{args.device}; "
        f"median of {args.rounds} alternating rounds"
    )
    header = f"{'patch':>5} {'variant':>18} {'images/s':>9} {'peak MB':>8} {'vitct/this':>10}"
    print(header)
    variants = VARIANTS + ((COMPILED,) if args.compile else ())
    for patch in args.patches:
        results = {v: [] for v in variants}
        for _ in range(args.rounds):
            for variant in variants:
                results[variant].append(run_child(variant, patch, argv))
        ours = [r["images_per_s"] for r in results["vitct"]]
        for variant in variants:
            speed = [r["images_per_s"] for r in results[variant]]
            ratio = statistics.median(a / b for a, b in zip(ours, speed, strict=True))
            peak = max(r["peak_rss_mb"] for r in results[variant])
            print(
                f"{patch:>5} {variant:>18} {statistics.median(speed):>9.1f} {peak:>8.0f} "
                f"{ratio:>9.2f}x"
            )


if __name__ == "__main__":
    main()
