"""The figures of one pipeline run, gathered into one folder (benchmarks/gpu_pipeline.sh calls it).

    python benchmarks/pipeline_figures.py --results results --out OUT [--gpu-samples FILE]

Reads what the run left behind and writes to OUT:
  stage_times.tsv    every job's wall time (Snakemake's benchmark files, results/benchmarks/RULE/
                     ...), its stage, and when it ended
  stages.tsv         per stage: jobs, summed job time, and its window (first start to last end)
  training_jobs.tsv  per training job (results/logs/runs/RECIPE/FOLD/seedSEED/train.log): first
                     epoch against the later epochs' median (the difference is mostly
                     torch.compile's compilation) and peak GPU memory
  summary.json       the sweep's images/s and GPU utilisation in its window, peak GPU memory,
                     compile time, the shipped model (validation, and locked test from its
                     predictions), the headline and the ablation once the summaries are made,
                     and whether the data came from a preprocessed cache
The stages (stage_of): `data` (fetch_data, build_manifest, preprocess, partition), `sweep` (train
jobs of grid recipes, named like patch_size~8_heads~1), `final` (train jobs of the final recipe:
the shipped model and the cross-validation runs), `variants` (train jobs of ablation variants),
`pretrain` and `score` (every recipe's), `summaries` (summarise, report), and each other rule
by its name (baselines, attention_maps, ship_model, predict).
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
DATA_RULES = ("fetch_data", "build_manifest", "preprocess")
FINAL = "final"  # vitct.pipeline.plan.FINAL
SHIPPED_FOLD = "all"  # the shipped model's fold (vitct.data.partition.ALL)
TEST, HELD_OUT = "test", "held_out"  # parts of a predictions table (vitct.evaluation.scoring)


def recipe_stage(recipe: str) -> str:
    """`sweep` for a grid combination (its name holds `~`: patch_size~8_heads~1, which an
    ablation variant's name cannot), `final`, or `variants`."""
    if recipe == FINAL:
        return "final"
    return "sweep" if "~" in recipe else "variants"


def stage_of(job: str) -> str:
    """The pipeline stage of a benchmark file (its path under results/benchmarks)."""
    parts = job.removesuffix(".tsv").split("/")
    rule = parts[0]
    if rule in DATA_RULES or rule == "partition":
        return "data"
    if rule == "train" and len(parts) > 1:
        return recipe_stage(parts[1])
    if rule in ("summarise", "report"):
        return "summaries"
    return rule  # pretrain, score, baselines, attention_maps, ship_model, predict


def job_times(bench: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(bench.rglob("*.tsv")):
        job = path.relative_to(bench).as_posix()
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


def run_of_log(log: str) -> dict:
    """recipe, fold, seed, step and stage of a run's log (runs/RECIPE/FOLD/seedSEED/STEP.log
    under results/logs); empty for any other log."""
    match = re.fullmatch(r"runs/([^/]+)/([^/]+)/seed(\d+)/(\w+)\.log", log)
    if not match:
        return {}
    recipe, fold, seed, step = match.groups()
    stage = recipe_stage(recipe) if step == "train" else step
    return {"recipe": recipe, "fold": fold, "seed": int(seed), "step": step, "stage": stage}


def training_jobs(logs: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(logs.rglob("*.log")):
        match = FIGURES.search(path.read_text(errors="replace"))
        if match:
            first, later, peak = match.groups()
            later = float(later)
            log = path.relative_to(logs).as_posix()
            rows.append(
                {
                    "log": log,
                    "stage": run_of_log(log).get("stage", ""),
                    "first_epoch_s": float(first),
                    "later_epochs_median_s": later,
                    "first_minus_later_s": round(float(first) - later, 2),
                    "peak_gpu_mib": int(peak),
                }
            )
    return pd.DataFrame(rows)


def run_metrics(results: Path) -> list[dict]:
    """Every finished run's train_metrics.json."""
    return [
        json.loads(p.read_text()) for p in sorted(results.glob("runs/*/*/seed*/train_metrics.json"))
    ]


def sweep_images(results: Path) -> int:
    """Training images the grid runs went through: epochs run x the run's training images
    (its fold's, without its inner validation split), summed."""
    return sum(
        m["images"]["train"] * m["epochs_run"]
        for m in run_metrics(results)
        if recipe_stage(m["recipe"]) == "sweep"
    )


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


def accuracy_and_mcc(predictions: pd.DataFrame) -> dict:
    from vitct.evaluation.metrics import binary_metrics

    scores = binary_metrics(predictions.label, predictions.prob_covid)
    return {key: scores[key] for key in ("n", "accuracy", "mcc", "roc_auc")}


def final_runs(results: Path) -> dict | None:
    """The final recipe's runs as the main stage leaves them (before the summaries): the shipped
    model's validation metrics and locked-test figures, and the cross-validation runs' held-out
    accuracy, each from the run's own files."""
    shipped = sorted(results.glob(f"runs/{FINAL}/{SHIPPED_FOLD}/seed*/predictions.tsv"))
    if not shipped:
        return None
    folder = shipped[0].parent
    metrics = json.loads((folder / "train_metrics.json").read_text())
    table = pd.read_csv(shipped[0], sep="\t", keep_default_na=False)
    result = {
        "shipped_run": folder.relative_to(results).as_posix(),
        "chosen": (metrics.get("chosen") or {}).get("params"),
        "validation": {k: v for k, v in metrics.items() if k.startswith("val_")},
        "locked_test": accuracy_and_mcc(table[table.part == TEST]),
    }
    held_out = []
    for path in sorted(results.glob(f"runs/{FINAL}/fold*/seed*/predictions.tsv")):
        table = pd.read_csv(path, sep="\t", keep_default_na=False)
        held_out.append(accuracy_and_mcc(table[table.part == HELD_OUT])["accuracy"])
    if held_out:
        result["cv_runs"] = len(held_out)
        result["cv_held_out_accuracy_mean_of_runs"] = statistics.mean(held_out)
    return result


def headline_figures(path: Path) -> dict | None:
    """The summaries' headline (results/summary/headline.json): the shipped model on the locked
    test and the cross-validation mean."""
    headline = read_json(path)
    if headline is None:
        return None
    test = headline["shipped"].get(TEST, {})
    figures = {
        "shipped_test": {
            k: test.get(k) for k in ("n", "accuracy", "mcc", "roc_auc", "ci95") if k in test
        },
    }
    cv = headline.get("cv")
    if cv:
        figures["cv"] = {k: cv.get(k) for k in ("accuracy", "mcc", "ci95", "folds", "seeds")}
    return figures


def ablation_records(path: Path) -> list[dict] | None:
    """results/summary/ablation.tsv as records (strict JSON: empty cells stay empty strings);
    None before the summaries, [] without variants."""
    if not path.exists():
        return None
    try:
        table = pd.read_csv(path, sep="\t", keep_default_na=False)
    except pd.errors.EmptyDataError:  # no variants: an empty table
        return []
    return table.to_dict(orient="records")


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
        sweep_logs = training[training.stage == "sweep"]
        summary["peak_gpu_mib_per_job_max"] = int(training.peak_gpu_mib.max())
        summary["first_minus_later_epoch_s_sweep_median"] = (
            statistics.median(sweep_logs.first_minus_later_s) if len(sweep_logs) else None
        )
    summary["final"] = final_runs(results)
    summary["headline"] = headline_figures(results / "summary" / "headline.json")
    summary["ablation"] = ablation_records(results / "summary" / "ablation.tsv")
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
