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
    "results/final/metrics.json",
    "results/final/predictions.csv",
    "results/sweep/summary.tsv",
    "results/sweep/best_params.json",
    "results/data/split.tsv",
    "results/baseline/baselines.json",
    "results/cv/folds.tsv",
    "results/cv/runs.tsv",
    "results/cv/headline.json",
    "results/cv/baselines.json",
)


def test_two_runs_give_byte_identical_results(demo_run: Path, tmp_path: Path):
    snakemake(tmp_path, config=demo_run_config())  # pretraining and CutMix included
    for name in IDENTICAL:
        assert (tmp_path / name).read_bytes() == (demo_run / name).read_bytes(), name


def finished_sweep_runs(log: str) -> set[str]:
    """Sweep run folders whose job Snakemake reported finished ("Finished jobid: N")."""
    folder_of = {}
    for block in re.split(r"\n(?=(?:local)?rule )", log):
        if re.match(r"(local)?rule train_sweep:", block):
            jobid = re.search(r"jobid: (\d+)", block).group(1)
            folder_of[jobid] = re.search(r"results/sweep/([^/]+)/metrics.json", block).group(1)
    done = re.findall(r"Finished jobid: (\d+) \(Rule: train_sweep\)", log)
    return {folder_of[j] for j in done}


def test_kill_9_mid_sweep_then_rerun_redoes_no_finished_job(tmp_path: Path):
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
        while not finished_sweep_runs(log_path.read_text()):  # until one job has finished
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no sweep job finished in 5 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its running job, at once
        proc.wait()
    sweep = tmp_path / "results/sweep"
    finished = {
        run: (sweep / run / "metrics.json").stat().st_mtime_ns
        for run in finished_sweep_runs(log_path.read_text())
    }
    assert 0 < len(finished) < 4
    # A killed Snakemake leaves its lock behind; --unlock is the documented way out.
    snakemake(tmp_path, "--unlock")
    snakemake(tmp_path, "--rerun-incomplete")
    assert (tmp_path / "results/report.html").exists()
    for run, mtime in finished.items():
        assert (sweep / run / "metrics.json").stat().st_mtime_ns == mtime, f"{run} trained again"
    assert len(list(sweep.glob("*/metrics.json"))) == 4
