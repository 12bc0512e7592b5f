"""The figures of one pipeline run, gathered into one folder (benchmarks/gpu_pipeline.sh calls it).

    python benchmarks/pipeline_figures.py --results results --out OUT [--gpu-samples FILE]

Reads what the run left behind and writes to OUT:
  stage_times.tsv    every job's wall time (Snakemake's benchmark files), its stage, and when it
                     ended
  stages.tsv         per stage: jobs, summed job time, and its window (first start to last end)
  training_jobs.tsv  per training job: first epoch against the later epochs' median (the
                     difference is mostly torch.compile's compilation) and peak GPU memory
  summary.json       the sweep's images/s and GPU utilisation in its window, peak GPU memory,
                     compile time, final (and ablation) metrics, and whether the data came from
                     a preprocessed cache
The GPU samples are lines "unix_time,utilisation %,memory MiB" (gpu_pipeline.sh writes them with
nvidia-smi); without them (the CPU path) GPU figures are left out, saying so.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import pandas as pd

FIGURES = re.compile(
    r"device figures: first epoch ([\d.]+) s, later epochs median ([\d.na]+) s, "
    r"peak GPU memory (\d+) MiB"
)
DATA_STEPS = ("fetch_data", "build_manifest", "grey_histograms", "split_manifest")


def stage_of(job: str) -> str:
    """The pipeline stage a benchmark file (path under results/benchmarks) belongs to."""
    if job.startswith("sweep/"):
        return "sweep"
    if job.startswith("ablation/"):
        return "ablation"
    if job.startswith("predict/"):
        return "predict"
    name = job.removesuffix(".tsv")
    if re.fullmatch(
        r"preprocess_\d+px|fetch_data|build_manifest|grey_histograms|split_manifest", name
    ):
        return "data"
    return name  # pretrain_final, train_final, evaluate, attention_maps, baselines, report, ...


def job_times(bench: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(bench.rglob("*.tsv")):
        job = str(path.relative_to(bench))
        seconds = float(pd.read_csv(path, sep="\t")["s"].iloc[-1])
        ended = path.stat().st_mtime  # written when the job ends
        rows.append({"job": job, "stage": stage_of(job), "s": seconds, "ended": ended})
    if not rows:
        raise SystemExit(f"no benchmark files under {bench}: did the pipeline run?")
    return pd.DataFrame(rows)


def stage_windows(jobs: pd.DataFrame) -> pd.DataFrame:
    started = jobs.ended - jobs.s
    table = jobs.assign(started=started).groupby("stage", sort=False)
    return pd.DataFrame(
        {
            "jobs": table.size(),
            "job_s": table.s.sum().round(1),
            "window_s": (table.ended.max() - table.started.min()).round(1),
            "started": table.started.min(),
            "ended": table.ended.max(),
        }
    ).sort_values("started")


def training_jobs(logs: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(logs.rglob("*.log")):
        match = FIGURES.search(path.read_text(errors="replace"))
        if match:
            first, later, peak = match.groups()
            later = float(later)
            rows.append(
                {
                    "log": str(path.relative_to(logs)),
                    "first_epoch_s": float(first),
                    "later_epochs_median_s": later,
                    "first_minus_later_s": round(float(first) - later, 2),
                    "peak_gpu_mib": int(peak),
                }
            )
    return pd.DataFrame(rows)


def sweep_images(results: Path) -> int:
    """Training images the sweep went through: epochs run x training images, summed."""
    split = pd.read_csv(results / "data" / "split.tsv", sep="\t", keep_default_na=False)
    n_train = int((split.split == "train").sum())
    epochs = [
        json.loads(p.read_text())["epochs_run"] for p in (results / "sweep").glob("*/metrics.json")
    ]
    return n_train * sum(epochs)


def gpu_in_window(samples: Path | None, started: float, ended: float) -> dict:
    if samples is None or not samples.exists() or not samples.stat().st_size:
        return {"gpu": "no GPU samples (CPU run, or nvidia-smi missing)"}
    table = pd.read_csv(samples, names=["t", "util", "mem"], skipinitialspace=True)
    table = table.apply(pd.to_numeric, errors="coerce").dropna()
    inside = table[(table.t >= started) & (table.t <= ended)]
    if inside.empty:
        return {"gpu": f"no GPU sample inside the window {started:.0f}-{ended:.0f}"}
    return {
        "gpu_utilisation_mean_pct": round(float(inside.util.mean()), 1),
        "gpu_utilisation_median_pct": float(inside.util.median()),
        "gpu_memory_used_max_mib": int(inside.mem.max()),
        "gpu_samples": len(inside),
    }


def read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def summarise(results: Path, out: Path, gpu_samples: Path | None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    jobs = job_times(results / "benchmarks")
    jobs.to_csv(out / "stage_times.tsv", sep="\t", index=False)
    stages = stage_windows(jobs)
    stages.to_csv(out / "stages.tsv", sep="\t")
    training = training_jobs(results / "logs")
    training.to_csv(out / "training_jobs.tsv", sep="\t", index=False)
    summary = {
        "from_cache": read_json(results / "data" / "from_cache.json"),
        "pipeline_window_s": round(float(stages.ended.max() - stages.started.min()), 1),
        "stages_window_s": stages.window_s.to_dict(),
    }
    if "sweep" in stages.index:
        sweep = stages.loc["sweep"]
        images = sweep_images(results)
        summary["sweep"] = {
            "jobs": int(sweep.jobs),
            "window_s": float(sweep.window_s),
            "training_images": images,
            "images_per_s": round(images / float(sweep.window_s), 1),
            **gpu_in_window(gpu_samples, float(sweep.started), float(sweep.ended)),
        }
    if not training.empty:
        sweep_logs = training[training.log.str.startswith("sweep/")]
        summary["peak_gpu_mib_per_job_max"] = int(training.peak_gpu_mib.max())
        summary["first_minus_later_epoch_s_sweep_median"] = (
            statistics.median(sweep_logs.first_minus_later_s) if len(sweep_logs) else None
        )
    summary["final_metrics"] = read_json(results / "final" / "metrics.json")
    ablation = results / "ablation" / "ablation.tsv"
    if ablation.exists():
        table = pd.read_csv(ablation, sep="\t", keep_default_na=False)  # strict JSON: no NaN
        summary["ablation"] = table.to_dict(orient="records")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpu-samples", type=Path)
    args = parser.parse_args()
    summary = summarise(args.results, args.out, args.gpu_samples)
    print(json.dumps({k: v for k, v in summary.items() if k != "ablation"}, indent=2, default=str))


if __name__ == "__main__":
    main()
