"""The workflow on a real SLURM cluster: a single-node one that scripts/slurm-test-cluster.sh
brings up on this machine (needs root and apt-get; .ci/run runs these tests), driven through a
profile derived from profiles/slurm."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, snakemake, tiny_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = REPO / "scripts" / "slurm-test-cluster.sh"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
FIRST_STATUS_CHECK = 2  # seconds; the cluster's MinJobAge (300 s) must stay above 3 x this


ENABLE = "VITCT_SLURM_TESTS"  # .ci/run sets it; the tests install packages and start daemons


def skip_or_fail(reason: str):
    """Skip outside CI; in CI (.ci/run) these tests must run, so a missing piece fails."""
    if os.environ.get("CI"):
        pytest.fail(f"SLURM tests cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node cluster; its daemons are stopped whatever the tests do."""
    if not os.environ.get(ENABLE) and not os.environ.get("CI"):
        pytest.skip(
            f"set {ENABLE}=1 to run the SLURM tests: they apt-get install slurm-wlm and munge, "
            "write /etc/slurm/slurm.conf and start SLURM daemons on this machine (as .ci/run does)"
        )
    if os.geteuid() != 0:
        skip_or_fail("the SLURM test cluster needs root (it installs packages and runs daemons)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        skip_or_fail("SLURM is not installed and apt-get is unavailable to install it")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        skip_or_fail("the SLURM executor plugin is missing: pip install -e '.[slurm]'")
    # Not under pytest's basetemp, which another pytest session may prune while the daemons run.
    state = Path(tempfile.mkdtemp(prefix="vitct-slurm-"))
    try:
        start = subprocess.run(
            ["bash", SCRIPT, "start", state], capture_output=True, text=True, timeout=300
        )
        if start.returncode != 0:
            pytest.fail(f"the SLURM test cluster did not start:\n{start.stdout}\n{start.stderr}")
        yield state
    finally:
        if subprocess.run(["bash", SCRIPT, "stop", state], timeout=120).returncode == 0:
            shutil.rmtree(state)  # kept otherwise: it names the daemons still to stop


def slurm_profile(folder: Path) -> Path:
    """profiles/slurm with the test cluster's partition and account, and squeue for job states
    (the cluster has no accounting database, so sacct knows no jobs)."""
    profile = yaml.safe_load(PROFILE.read_text())
    for resources in (profile["default-resources"], *profile["set-resources"].values()):
        resources["slurm_partition"] = "debug"
    profile["default-resources"]["slurm_account"] = "vitct-test"  # accepted without accounting
    profile.update(
        {
            "slurm-status-command": "squeue",
            "slurm-init-seconds-before-status-checks": FIRST_STATUS_CHECK,
            "slurm-keep-successful-logs": True,
            "latency-wait": 5,
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def slurm_job_states() -> dict[str, str]:
    """SLURM job id -> state of every job the controller still remembers (MinJobAge)."""
    out = subprocess.run(
        ["squeue", "-h", "--states=all", "-o", "%i %T"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split() for line in out.splitlines())


def test_pipeline_on_slurm_matches_a_local_run(slurm_cluster, tmp_path):
    config = tiny_config()
    cluster = tmp_path / "slurm"
    profile = slurm_profile(tmp_path / "profile")
    proc = snakemake(cluster, "--profile", str(profile), config=config, timeout=900)
    output = proc.stdout + proc.stderr
    assert "Falling back to 'sacct'" not in output  # MinJobAge is long enough for squeue

    # Every training (4 grid runs and the shipped model) was a SLURM job: its own log under
    # .snakemake/slurm_logs, named by its SLURM job id, which the controller lists as completed.
    logs = sorted((cluster / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log"))
    assert len(logs) == 5, output[-4000:]
    states = slurm_job_states()
    for log in logs:
        assert f"SLURM jobid {log.stem} " in output
        assert states.get(log.stem) == "COMPLETED", (log, states)
        assert "rule train" in log.read_text()
    # So were the other heavy steps, and the light ones (localrules) ran in Snakemake itself.
    submitted = set(re.findall(r"slurm_logs/rule_(\w+)/", output))
    assert {"preprocess", "train", "score", "baselines", "attention_maps"} <= submitted
    assert not submitted & {
        "fetch_data",
        "build_manifest",
        "partition",
        "summarise",
        "report",
        "ship_model",
    }

    local = tmp_path / "local"
    snakemake(local, config=config)
    for name in ("results/summary/sweep.tsv", "results/runs/final/all/seed0/predictions.tsv"):
        assert (cluster / name).read_bytes() == (local / name).read_bytes(), name


def test_failing_slurm_job_is_reported_with_its_log(slurm_cluster, tmp_path):
    # Passes config validation (device is free text) but fails inside the training job.
    config = tiny_config(sweep={"grid": {"heads": [2]}}, training={"device": "no-such-device"})
    workdir = tmp_path / "run"
    profile = slurm_profile(tmp_path / "profile")
    proc = snakemake(workdir, "--profile", str(profile), config=config, check=False, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-4000:]
    assert "Error in rule train" in output, output[-4000:]
    # the rule's log, shown too
    assert "results/logs/runs/heads~2/all/seed0/train.log" in output
    assert "no-such-device" in output
    slurm_logs = list((workdir / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log"))
    assert len(slurm_logs) == 1
    assert str(slurm_logs[0]) in output  # the failed job's SLURM log is named
    assert slurm_job_states()[slurm_logs[0].stem] == "FAILED"
