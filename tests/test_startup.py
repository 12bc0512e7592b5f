"""The start-up message: jobs per rule, a rough time, and the warning for a GPU-sized run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import REPO, snakemake

from vitct.startup import (
    GPU_SIZED_HOURS,
    TrainingJob,
    expected_images,
    start_up_message,
    training_jobs,
)

MODEL = {"image_size": 64, "depth": 3, "tokenizer": "patch"}
IMAGES = {"train": 700, "val": 150, "test": 150}


def job(**changes) -> TrainingJob:
    return TrainingJob(**{"rule": "train_final", "images": 700, "epochs": 10, **MODEL, **changes})


def test_work_grows_with_pixels_depth_and_the_conv_stem():
    base = job().core_seconds()
    assert job(image_size=128).core_seconds() == pytest.approx(4 * base)
    assert job(depth=6).core_seconds() == pytest.approx(2 * base)
    assert job(tokenizer="conv").core_seconds() > 3 * base
    assert job(epochs=20).core_seconds() == pytest.approx(2 * base)


def test_a_shared_pretraining_is_counted_once_in_its_own_job():
    training = {"epochs": 60, "pretrain_epochs": 50}
    (pretraining,) = training_jobs("pretrain_final", MODEL, training, IMAGES, pretrains=True)
    assert (pretraining.images, pretraining.epochs) == (850, 50)  # train + val, unlabelled
    (supervised,) = training_jobs("train_final", MODEL, training, IMAGES, pretrains=False)
    assert (supervised.images, supervised.epochs) == (700, 60)
    # A sweep job has no shared pretraining: it pretrains itself, then trains.
    own = training_jobs("train_sweep", MODEL, training, IMAGES, pretrains=True)
    assert [j.epochs for j in own] == [50, 60]
    assert training_jobs("train_sweep", MODEL, {"epochs": 5, "pretrain_epochs": 0}, IMAGES, True)


def test_expected_images_come_from_the_demo_or_the_dataset_counts():
    fractions = {"train": 0.5, "val": 0.25, "test": 0.25}
    demo = {
        "dataset": {"source": "demo", "demo": {"n_per_class": 10}},
        "split": {"fractions": fractions},
    }
    assert expected_images(demo) == {"train": 10, "val": 5, "test": 5}
    real = {
        "dataset": {"source": "kaggle", "expected_counts": {"COVID": 60, "non-COVID": 40}},
        "split": {"fractions": fractions},
    }
    assert expected_images(real)["train"] == 50


def long_run(hours: float) -> list[TrainingJob]:
    """Training work that takes about `hours` on 2 CPU cores."""
    one_hour = job()
    n = round(hours * 3600 * 2 / one_hour.core_seconds())
    return [job(epochs=10 * n)]


def test_a_gpu_sized_run_on_the_cpu_is_warned_about():
    counts = Counter({"train_sweep": 27, "train_final": 1, "report": 1})
    summary, warning = start_up_message(counts, long_run(GPU_SIZED_HOURS + 5), 2, cuda=False)
    assert "29 jobs to run" in summary and "train_sweep 27" in summary
    assert "No CUDA device" in summary
    assert warning is not None and "sized for a GPU" in warning
    assert "config/real-cpu.yaml" in warning  # says what to do instead


def test_a_cpu_sized_run_or_a_gpu_gets_no_warning():
    counts = Counter({"train_final": 1})
    summary, warning = start_up_message(counts, long_run(1), 2, cuda=False)
    assert warning is None and "roughly 1.0 h" in summary
    summary, warning = start_up_message(counts, long_run(GPU_SIZED_HOURS + 5), 2, cuda=True)
    assert warning is None and "CUDA" in summary
    summary, warning = start_up_message(counts, long_run(50), 2, cuda=False, on_cluster=True)
    assert warning is None and "cluster" in summary


def test_the_gpu_default_warns_before_its_first_job_on_a_cpu(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a CPU-only machine, even on a GPU one
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    # --touch runs the onstart handler (a dry run does not) and trains nothing.
    proc = snakemake(tmp_path, "--touch", "fetch_data", "--forceall", config=config, check=False)
    log = proc.stdout + proc.stderr
    assert "vitct: 1 jobs to run (fetch_data 1)" in log
    proc = snakemake(tmp_path, "--touch", config=config, check=False)
    log = proc.stdout + proc.stderr
    assert "train_sweep 27" in log
    assert "sized for a GPU" in log
