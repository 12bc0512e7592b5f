"""Same config and seed, same bytes; a killed run finishes only what is missing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SNAKEFILE, demo_run_config, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow

IDENTICAL = (
    "results/model.safetensors",
    "results/runs/final/all/seed0/predictions.tsv",
    "results/runs/final/fold1/seed1/train_metrics.json",
    "results/runs/final/fold1/seed1/predictions.tsv",
    "results/summary/headline.json",
    "results/summary/runs.tsv",
    "results/summary/sweep.tsv",
    "results/summary/ablation.tsv",
    "results/data/partition.tsv",
    "results/baselines/fold0/predictions.tsv",
)


def test_two_runs_give_byte_identical_results(demo_run: Path, tmp_path: Path):
    snakemake(tmp_path, config=demo_run_config())  # pretraining and CutMix included
    for name in IDENTICAL:
        assert (tmp_path / name).read_bytes() == (demo_run / name).read_bytes(), name


def finished_grid_runs(log: str) -> set[str]:
    """Grid run folders (results/runs/NAME/all/seed0) whose training Snakemake reported
    finished ("Finished jobid: N")."""
    folder_of = {}
    for block in re.split(r"\n(?=(?:local)?rule )", log):
        found = re.search(r"results/runs/([^/]+~[^/]+)/all/seed0/train_metrics.json", block)
        if re.match(r"(local)?rule train:", block) and found:
            folder_of[re.search(r"jobid: (\d+)", block).group(1)] = found.group(1)
    done = re.findall(r"Finished jobid: (\d+) \(Rule: train\)", log)
    return {folder_of[j] for j in done if j in folder_of}


def test_kill_9_mid_grid_then_rerun_redoes_no_finished_job(tmp_path: Path):
    config = tiny_config(training={"epochs": 6}, final={"overrides": {"epochs": 2}})
    write_config(tmp_path, config)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "config.yaml"),
        "--cores",
        "1",
    ]
    log_path = tmp_path / "killed-run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not finished_grid_runs(log_path.read_text()):  # until one job has finished
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no grid run finished in 5 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its running job, at once
        proc.wait()
    runs = tmp_path / "results/runs"
    finished = {
        run: (runs / run / "all/seed0/train_metrics.json").stat().st_mtime_ns
        for run in finished_grid_runs(log_path.read_text())
    }
    assert 0 < len(finished) < 4
    # A killed Snakemake leaves its lock behind; --unlock is the documented way out.
    snakemake(tmp_path, "--unlock")
    snakemake(tmp_path, "--rerun-incomplete")
    assert (tmp_path / "results/report.html").exists()
    for run, mtime in finished.items():
        metrics = runs / run / "all/seed0/train_metrics.json"
        assert metrics.stat().st_mtime_ns == mtime, f"{run} trained again"
    assert len(list(runs.glob("*~*/all/seed0/train_metrics.json"))) == 4
