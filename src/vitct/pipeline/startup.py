"""What a run is about to do, said before its first job: the jobs per rule, a rough time, and a
warning when a CPU alone would take a very long time (a configuration sized for a GPU).

Snakemake's `onstart` handler (workflow/rules/startup.smk) builds one `TrainingJob` per
training or pretraining job it is about to run and hands them to `start_up_message`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

# Image-epochs one CPU core trains per second for the reference model (64 px images, three
# attention layers, patch tokenizer). Calibrated on the pipeline's own job times on 2 CPU
# cores (the 64 px sweep, the 64 and 128 px conv-tokenizer trainings and pretrainings); the
# estimate lands within about a factor of two of them.
CPU_IMAGE_EPOCHS_PER_CORE_SECOND = 700.0
REFERENCE_IMAGE_SIZE = 64
REFERENCE_DEPTH = 3
# The convolutional stem runs on every pixel, so it costs more than the attention layers.
CONV_TOKENIZER_COST = 3.5
# Data steps, evaluation, attention maps, baselines and the report, per job.
OTHER_JOB_CORE_SECONDS = 30.0
# Lighter jobs: logging one run to the MLflow store (tracking.mlflow), a few seconds each.
LIGHT_JOB_CORE_SECONDS = {"track": 3.0}
# One modern data-centre GPU (an H100 or H200) running several of these small trainings at once
# (profiles/gpu), as CPU cores of the reference rate: an assumption until
# benchmarks/gpu_pipeline.sh has measured it; config/config.yaml is sized to it.
GPU_CORE_EQUIVALENT = 200.0
# A run estimated past this on the CPU is one meant for a GPU (or a cluster of them).
GPU_SIZED_HOURS = 12.0


@dataclass(frozen=True)
class TrainingJob:
    """One training (or pretraining) job's work: `images` scans seen for `epochs` epochs by a
    model of this size."""

    rule: str
    images: int
    epochs: int
    image_size: int
    depth: int
    tokenizer: str

    def core_seconds(self) -> float:
        """CPU time this job needs, from its image-epochs scaled by pixels, depth and stem."""
        scale = (self.image_size / REFERENCE_IMAGE_SIZE) ** 2 * self.depth / REFERENCE_DEPTH
        if self.tokenizer == "conv":
            scale *= CONV_TOKENIZER_COST
        return self.images * self.epochs * scale / CPU_IMAGE_EPOCHS_PER_CORE_SECOND


def run_images(config: dict, fold: str) -> dict[str, int]:
    """Training and inner-validation images of a run on `fold`, before the data are read: the
    demo's count, or the count the real dataset is expected to hold (dataset.expected_counts),
    less the locked test split and, for a cross-validation fold, its held-out fold."""
    dataset, split = config["dataset"], config["split"]
    if dataset["source"] == "demo":
        total = 2 * dataset["demo"]["n_per_class"]
    else:
        total = sum(dataset["expected_counts"].values())
    pool = total * (1 - split["test"])
    if fold != "all":
        folds = config["evaluation"]["folds"]
        pool *= (folds - 1) / folds
    return {"train": round(pool * (1 - split["val"])), "val": round(pool * split["val"])}


def training_jobs(rule: str, model: dict, training: dict, images: dict, pretrains: bool):
    """The work of one job of `rule` (train or pretrain): its supervised epochs (train), and
    its masked-image pretraining when the job pretrains (pretrain, or a training job with no
    shared pretraining to start from)."""
    shape = {
        "image_size": model["image_size"],
        "depth": model["depth"],
        "tokenizer": model["tokenizer"],
    }
    jobs = []
    if pretrains and training["pretrain_epochs"]:
        unlabelled = images["train"] + images["val"]
        jobs.append(TrainingJob(rule, unlabelled, training["pretrain_epochs"], **shape))
    if rule == "train":
        jobs.append(TrainingJob(rule, images["train"], training["epochs"], **shape))
    return jobs


def format_hours(seconds: float) -> str:
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min"
    return f"{seconds / 3600:.1f} h"


def start_up_message(
    counts: Counter,
    jobs: list[TrainingJob],
    cores: int,
    cuda: bool,
    on_cluster: bool = False,
) -> tuple[str, str | None]:
    """(summary, warning or None) for the log before the first job. `counts` is the number of
    jobs per rule about to run; `jobs` their training work."""
    total = sum(counts.values())
    rows = ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items()))
    summary = [f"vitct: {total} jobs to run ({rows})."]
    n_training = counts["train"] + counts["pretrain"]
    n_light = sum(counts[rule] for rule in LIGHT_JOB_CORE_SECONDS)
    other = (total - n_training - n_light) * OTHER_JOB_CORE_SECONDS
    other += sum(counts[rule] * seconds for rule, seconds in LIGHT_JOB_CORE_SECONDS.items())
    core_seconds = sum(job.core_seconds() for job in jobs) + other
    cpu_wall = core_seconds / max(1, cores)
    warning = None
    if on_cluster:
        summary.append(
            f"On the cluster's nodes; on CPUs alone these jobs need about "
            f"{format_hours(core_seconds)} of CPU-core time in all."
        )
    elif cuda:
        gpu_wall = sum(job.core_seconds() for job in jobs) / GPU_CORE_EQUIVALENT
        gpu_wall += other / max(1, cores)
        summary.append(
            f"Training on CUDA: roughly {format_hours(gpu_wall)} on one modern GPU running "
            "several jobs at once (an assumed rate, not yet measured: "
            "benchmarks/gpu_pipeline.sh measures it); on "
            f"{cores} CPU cores it would be about {format_hours(cpu_wall)}."
        )
    else:
        summary.append(
            f"No CUDA device: training on {cores} CPU cores, roughly {format_hours(cpu_wall)} "
            "(within a factor of about two)."
        )
        if cpu_wall > GPU_SIZED_HOURS * 3600:
            warning = (
                f"this configuration is sized for a GPU: about {format_hours(cpu_wall)} on "
                f"{cores} CPU cores. On a CPU use config/real-cpu.yaml (config/README.md "
                "lists the configs), or run on a GPU or a cluster (profiles/slurm)."
            )
    return " ".join(summary), warning
