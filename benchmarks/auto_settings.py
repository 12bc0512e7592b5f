"""What `training.compile: auto` and `training.bf16: auto` should do on the GPU that bench ran on.

    python benchmarks/auto_settings.py OUT/bench > auto_settings.json

Reads the grid jobs benchmarks/gpu_pipeline.sh bench trained with gpu_train_job.py (full length,
patch 8 and 32, the sweep's slowest and fastest: fp32 eager, bf16 eager, bf16 compiled) and
prints an entry for vitct.training.accelerator.MEASURED: bf16 pays when the bf16 jobs took
less time in all than the fp32 ones, compile pays when the compiled jobs, compilation included,
took less time than the eager ones. Paste the entry into MEASURED to make `auto` follow it on
that GPU.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

RUNS = ("fp32_eager", "bf16_eager", "bf16_compiled")


def decide(bench: Path) -> dict:
    seconds, gpu = {run: {} for run in RUNS}, None
    for run in RUNS:
        for path in sorted(bench.glob(f"grid_job_{run}_patch*.json")):
            figures = json.loads(path.read_text())
            gpu = figures["gpu"]
            seconds[run][figures["patch"]] = figures["seconds"]
    patches = set.intersection(*(set(s) for s in seconds.values()))
    if not patches:
        raise SystemExit(f"{bench}: no patch size was measured under all of {', '.join(RUNS)}")
    total = {run: round(sum(seconds[run][p] for p in patches), 2) for run in RUNS}
    return {
        gpu: {
            "bf16": total["bf16_eager"] < total["fp32_eager"],
            "compile": total["bf16_compiled"] < total["bf16_eager"],
            "source": f"benchmarks/gpu_pipeline.sh bench, {date.today()}: seconds of full-length "
            f"grid jobs, patches {sorted(patches)}, summed: {total}",
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="bench's folder of grid_job_*.json files")
    args = parser.parse_args()
    print(json.dumps(decide(args.bench), indent=2))


if __name__ == "__main__":
    main()
