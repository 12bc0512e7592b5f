"""Wall time of the whole demo pipeline from scratch, and how busy it kept the cores.

    python benchmarks/demo_wall_time.py [--cores 2] [--configfile config/demo.yaml]

Runs the pipeline in a fresh temporary working directory (nothing is reused), then prints the
wall time against the 5-minute target and, from the rules' benchmark files
(results/benchmarks/RULE/...), how busy the cores were: (sum of job run times) / (wall time x
cores), for the whole run and for the sweep (the train jobs of the grid recipes,
results/benchmarks/train/RECIPE/FOLD/seedSEED.tsv with RECIPE a combination such as
patch_size~8_dropout~0.1), and the headline (results/summary/headline.json): the shipped
model's locked-test metrics and, with folds, the cross-validation mean.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 300


def sweep_jobs(bench: Path) -> list[Path]:
    """The benchmark files of the grid runs' train jobs (a grid recipe's name holds `~`, which
    neither `final` nor an ablation variant's can)."""
    return sorted(p for p in bench.glob("train/*/*/seed*.tsv") if "~" in p.parent.parent.name)


def sweep_efficiency(paths: list[Path], cores: int) -> tuple[float, float, float, int]:
    """(sum of sweep job times) / (sweep wall time x cores).

    Each benchmark file is written as its job ends, so its modification time is the job's end
    and (end - run time) its start; the sweep's wall time runs from the first start to the last
    end.
    """
    if not paths:
        raise SystemExit("no benchmark file of a grid run's train job: did the sweep run?")
    spans = []
    for path in paths:
        seconds = pd.read_csv(path, sep="\t")["s"].iloc[0]
        end = path.stat().st_mtime
        spans.append((end - seconds, end, seconds))
    window = max(e for _, e, _ in spans) - min(s for s, _, _ in spans)
    busy = sum(s for _, _, s in spans)
    return busy / (window * cores), window, busy, len(spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--configfile", default=str(REPO / "config/demo.yaml"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vitct-bench-") as workdir:
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "--snakefile",
                str(REPO / "Snakefile"),
                "--directory",
                workdir,
                "--configfile",
                args.configfile,
                "--cores",
                str(args.cores),
                "--quiet",
                "all",
            ],
            check=True,
        )
        wall = time.perf_counter() - started
        bench = Path(workdir) / "results/benchmarks"
        jobs = sorted(bench.rglob("*.tsv"))
        total = sum(pd.read_csv(p, sep="\t")["s"].iloc[0] for p in jobs)
        efficiency, window, busy, n_sweep = sweep_efficiency(sweep_jobs(bench), args.cores)
        headline = json.loads((Path(workdir) / "results/summary/headline.json").read_text())
    print(
        f"demo pipeline wall time: {wall:.1f} s on {args.cores} cores "
        f"(target {TARGET_SECONDS} s: {wall / TARGET_SECONDS:.2f} of it)"
    )
    print(
        f"benchmarked jobs: {len(jobs)}, their run times add up to {total:.1f} s; "
        f"core use {total / (wall * args.cores):.2f}"
    )
    print(
        f"sweep: {n_sweep} jobs, {busy:.1f} s of job time in a {window:.1f} s window on "
        f"{args.cores} cores: parallel efficiency {efficiency:.2f} (target 0.85)"
    )
    test = headline["shipped"]["test"]  # the shipped model on the locked test split
    low, high = test.get("ci95", {}).get("accuracy", [float("nan")] * 2)
    print(
        f"demo shipped model, locked test: accuracy {test['accuracy']:.4f} "
        f"[{low:.3f}, {high:.3f}], MCC {test['mcc']:.4f}, ROC-AUC {test['roc_auc']:.4f} "
        f"(n={test['n']})"
    )
    cv = headline.get("cv")
    if cv:
        low, high = cv.get("ci95", {}).get("accuracy", [float("nan")] * 2)
        print(
            f"demo cross-validation: accuracy {cv['accuracy']:.4f} [{low:.3f}, {high:.3f}] "
            f"over {cv['folds']} folds x {len(cv['seeds'])} seed(s)"
        )


if __name__ == "__main__":
    main()
