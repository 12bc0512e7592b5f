"""The start-up message: jobs per rule, a rough time, and the warning for a GPU-sized run on a
CPU."""

from __future__ import annotations

from collections import Counter

import pytest

from vitct.pipeline.startup import (
    CPU_IMAGE_EPOCHS_PER_CORE_SECOND,
    GPU_SIZED_HOURS,
    OTHER_JOB_CORE_SECONDS,
    TrainingJob,
    format_hours,
    run_images,
    start_up_message,
    training_jobs,
)

MODEL = {"image_size": 64, "depth": 3, "tokenizer": "patch"}
IMAGES = {"train": 700, "val": 150}


def demo_config(folds: int = 4) -> dict:
    return {
        "dataset": {"source": "demo", "demo": {"n_per_class": 100}},
        "split": {"test": 0.2, "val": 0.25},
        "evaluation": {"folds": folds},
    }


def test_a_run_on_all_trains_on_the_pool_less_its_validation_split():
    # 200 demo images, 160 outside the locked test, a quarter of them validation.
    assert run_images(demo_config(), "all") == {"train": 120, "val": 40}


def test_a_fold_run_also_leaves_out_its_held_out_fold():
    # 160 outside the test, three quarters of them outside the held-out fold.
    assert run_images(demo_config(folds=4), "fold2") == {"train": 90, "val": 30}


def test_a_real_run_counts_the_images_the_dataset_is_expected_to_hold():
    config = {
        "dataset": {"source": "kaggle", "expected_counts": {"COVID": 1252, "non-COVID": 1229}},
        "split": {"test": 0.15, "val": 0.15},
        "evaluation": {"folds": 5},
    }
    pool = 2481 * 0.85
    assert run_images(config, "all") == {"train": round(pool * 0.85), "val": round(pool * 0.15)}
    fold = run_images(config, "fold0")
    assert fold == {"train": round(pool * 0.8 * 0.85), "val": round(pool * 0.8 * 0.15)}


def job(**changes) -> TrainingJob:
    return TrainingJob(**{"rule": "train", "images": 700, "epochs": 10, **MODEL, **changes})


def test_work_grows_with_images_epochs_pixels_depth_and_the_conv_stem():
    base = job().core_seconds()
    assert base == pytest.approx(700 * 10 / CPU_IMAGE_EPOCHS_PER_CORE_SECOND)
    assert job(image_size=128).core_seconds() == pytest.approx(4 * base)
    assert job(depth=6).core_seconds() == pytest.approx(2 * base)
    assert job(epochs=20).core_seconds() == pytest.approx(2 * base)
    assert job(images=350).core_seconds() == pytest.approx(base / 2)
    assert job(tokenizer="conv").core_seconds() > 3 * base


def test_a_pretrain_job_pretrains_on_the_training_and_validation_images_unlabelled():
    training = {"epochs": 60, "pretrain_epochs": 50}
    (pretraining,) = training_jobs("pretrain", MODEL, training, IMAGES, pretrains=True)
    assert (pretraining.rule, pretraining.images, pretraining.epochs) == ("pretrain", 850, 50)


def test_a_train_job_pretrains_itself_only_without_a_shared_pretraining():
    training = {"epochs": 60, "pretrain_epochs": 50}
    (supervised,) = training_jobs("train", MODEL, training, IMAGES, pretrains=False)
    assert (supervised.images, supervised.epochs) == (700, 60)
    own = training_jobs("train", MODEL, training, IMAGES, pretrains=True)
    assert [(j.images, j.epochs) for j in own] == [(850, 50), (700, 60)]
    no_pretraining = {"epochs": 5, "pretrain_epochs": 0}
    assert len(training_jobs("train", MODEL, no_pretraining, IMAGES, pretrains=True)) == 1
    assert training_jobs("pretrain", MODEL, no_pretraining, IMAGES, pretrains=True) == []


def work(core_seconds: float) -> list[TrainingJob]:
    """One training job of this many CPU-core seconds (one reference image-epoch each)."""
    epochs = round(core_seconds * CPU_IMAGE_EPOCHS_PER_CORE_SECOND / 700)
    return [job(epochs=epochs)]


def test_on_a_cpu_the_message_counts_the_jobs_and_gives_a_rough_time():
    counts = Counter({"train": 3, "report": 1})
    # 2 h of training and one other job's 30 s on 2 cores: about 1.0 h.
    summary, warning = start_up_message(counts, work(2 * 3600 - 30), cores=2, cuda=False)
    assert summary.startswith("vitct: 4 jobs to run (report 1, train 3).")
    assert "No CUDA device: training on 2 CPU cores, roughly 1.0 h" in summary
    assert warning is None


def test_a_run_past_twelve_hours_on_the_cpu_is_warned_about_and_pointed_to_real_cpu():
    hours = GPU_SIZED_HOURS + 1
    summary, warning = start_up_message(
        Counter({"train": 1}), work(hours * 3600 * 4), cores=4, cuda=False
    )
    assert f"roughly {hours:.1f} h" in summary
    assert warning is not None and "sized for a GPU" in warning
    assert f"about {hours:.1f} h on 4 CPU cores" in warning
    assert "config/real-cpu.yaml" in warning
    just_under = start_up_message(Counter({"train": 1}), work(11.9 * 3600), cores=1, cuda=False)
    assert just_under[1] is None


def test_on_cuda_the_message_gives_an_assumed_estimate_and_no_warning():
    counts = Counter({"train": 1, "summarise": 2})
    core_seconds = 100 * 3600
    summary, warning = start_up_message(counts, work(core_seconds), cores=4, cuda=True)
    assert warning is None
    gpu = format_hours(core_seconds / 200 + 2 * OTHER_JOB_CORE_SECONDS / 4)
    assert f"Training on CUDA: roughly {gpu} on one modern GPU" in summary
    assert "an assumed rate, not yet measured" in summary
    cpu = format_hours((core_seconds + 2 * OTHER_JOB_CORE_SECONDS) / 4)
    assert f"on 4 CPU cores it would be about {cpu}" in summary


def test_on_a_cluster_the_message_gives_the_cpu_core_time_and_no_warning():
    counts = Counter({"train": 1})
    summary, warning = start_up_message(counts, work(50 * 3600), 2, cuda=False, on_cluster=True)
    assert warning is None
    assert "On the cluster's nodes" in summary and "about 50.0 h of CPU-core time" in summary
    assert "No CUDA device" not in summary


def test_times_read_in_minutes_below_an_hour_and_hours_above():
    assert (format_hours(10), format_hours(600), format_hours(5400)) == ("1 min", "10 min", "1.5 h")
