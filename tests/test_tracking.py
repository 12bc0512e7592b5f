"""Run tracking (tracking.mlflow): off, no job logs and nothing imports mlflow; on, every
training run has one entry in the local MLflow store with its settings, per-epoch curves,
final metrics and model file, and a rerun replaces its entry; without MLflow installed the
workflow refuses to start."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import SNAKEFILE, demo_run_config, jobs_to_run, snakemake, tiny_config, write_config

from vitct.pipeline.code_inputs import code_files
from vitct.pipeline.config_checks import validate_config
from vitct.pipeline.plan import Plan, Run
from vitct.pipeline.startup import (
    LIGHT_JOB_CORE_SECONDS,
    OTHER_JOB_CORE_SECONDS,
    format_hours,
    start_up_message,
)
from vitct.pipeline.tracking import (
    INSTALL,
    RunIdentity,
    TrackingError,
    log_run,
    require_mlflow,
    run_kind,
    run_record,
    store_uri,
)

REPO = SNAKEFILE.parent
SCHEMA_PATH = str(REPO / "workflow/schemas/config.schema.yaml")
# The tests that read a store need MLflow; the others hold without it.
needs_mlflow = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None,
    reason=f"MLflow is not installed: {INSTALL} (.ci/run does)",
)

# A tiny config with an adaptation site, so that every kind of training run is planned.
ADAPTING = {
    "evaluation": {"folds": 2, "seeds": [0], "external": {"scanner_b": "demo:b"}},
    "ablation": {"variants": {"no_augmentation": {"augment": False}}},
    "adaptation": {"site": "scanner_b", "labels": [0, 4], "draws": 1, "method": "finetune"},
}


def imported_modules(stderr: str) -> set[str]:
    """The modules a process imported, from its PYTHONPROFILEIMPORTTIME lines."""
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", stderr, re.MULTILINE))


def planned_jobs(stdout: str) -> dict[str, int]:
    """Rule -> job count of a `--dry-run --quiet rules` table."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stdout, re.MULTILINE)}


# On, the workflow refuses to start without MLflow (tested below): the plan needs it installed.
@pytest.mark.parametrize("on", [False, pytest.param(True, marks=needs_mlflow)], ids=["off", "on"])
def test_tracking_adds_one_logging_job_per_training_and_imports_no_mlflow_to_plan(
    on, tmp_path, monkeypatch
):
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # every module Snakemake imports
    config = tiny_config(**ADAPTING, tracking={"mlflow": on})
    proc = snakemake(tmp_path, "--dry-run", "--quiet", "rules", config=config)
    modules = imported_modules(proc.stderr)
    assert "snakemake" in modules  # the import record is there
    assert not {m for m in modules if m.split(".")[0] == "mlflow"}
    jobs = planned_jobs(proc.stdout)
    trainings = jobs["train"] + jobs["adapt"]
    assert jobs["adapt"] == 1
    assert jobs.get("track", 0) == (trainings if on else 0)


def test_only_the_track_step_imports_the_tracking_code():
    """Tracking is a job of its own: no other step can import mlflow whatever the key says, and
    editing the tracking code retrains nothing."""
    tracking = REPO / "src/vitct/pipeline/tracking.py"
    importers = {
        script.name
        for script in (REPO / "workflow/scripts").glob("*.py")
        if tracking in {Path(f) for f in code_files(script, REPO / "src/vitct")}
    }
    assert importers == {"track.py"}


def test_without_mlflow_the_workflow_refuses_to_start_and_says_what_to_install(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what find_spec sees when it is absent
    with pytest.raises(TrackingError, match=re.escape(INSTALL)):
        require_mlflow()
    write_config(tmp_path, tiny_config(tracking={"mlflow": True}))
    hidden = "import sys; sys.modules['mlflow'] = None; from snakemake.cli import main; main()"
    args = ["--snakefile", str(SNAKEFILE), "--directory", str(tmp_path), "--cores", "1"]
    args += ["--configfile", str(tmp_path / "config.yaml")]
    proc = subprocess.run(
        [sys.executable, "-c", hidden, *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    assert "tracking.mlflow is on, but MLflow is not installed" in proc.stderr
    assert INSTALL in proc.stderr
    assert not (tmp_path / "results").exists()  # no job ran


def test_the_start_up_estimate_counts_seconds_per_logging_job():
    counts = Counter({"report": 1, "track": 20})
    summary, _ = start_up_message(counts, [], cores=1, cuda=False)
    expected = OTHER_JOB_CORE_SECONDS + 20 * LIGHT_JOB_CORE_SECONDS["track"]  # 90 s, not 630
    assert f"roughly {format_hours(expected)} " in summary
    assert format_hours(expected) == "2 min"


def test_each_run_has_a_kind_that_groups_it():
    config = tiny_config(**ADAPTING)
    validate_config(config, yaml.safe_load(Path(SCHEMA_PATH).read_text()), SCHEMA_PATH)
    plan = Plan(config)
    kinds = {}
    for run in plan.runs():
        kinds.setdefault(run_kind(plan, run), []).append(run)
    assert kinds["sweep"] == plan.sweep_runs()
    assert kinds["shipped"] == [plan.shipped()]
    assert kinds["cross-validation"] == plan.cv_runs()
    assert kinds["ablation"] == plan.variant_runs()
    assert kinds["adaptation"] == plan.adaptation_runs()
    assert run_kind(plan, Run("final", "lo_scanner_b", 0)) == "leave-source-out"


# --- the store ---------------------------------------------------------------------------------

EXPERIMENT = "vitct on test data"
TRAINED = {
    "recipe": "final",
    "fold": "fold0",
    "seed": 1,
    "model": {"depth": 3, "patch_size": 8},
    "training": {"lr": 0.001, "augment": True},
    "changes": {"depth": 3, "seed": 1},
    "chosen": {"recipe": "patch_size~8", "params": {"patch_size": 8}},
    "images": {"train": 30, "val": 10},
    "best_epoch": 2,
    "epochs_run": 3,
    "parameters": 1234,
    "val_mcc": 0.5,
    "val_roc_auc": float("nan"),  # one class in a tiny validation split
}
HISTORY = pd.DataFrame(
    {"epoch": [1, 2, 3], "lr": [0.001, 0.0005, 0.0], "train_loss": [0.7, 0.6, 0.5],
     "val_mcc": [0.1, 0.5, 0.4]}
)  # fmt: skip


def log(store: Path, tmp_path: Path, run: RunIdentity, metrics: dict = TRAINED) -> str:
    settings, final, tags = run_record(metrics)
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights")
    return log_run(store, EXPERIMENT, run, settings, HISTORY, final, [model], tags)


def client_of(store: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store_uri(store))


def active_runs(store: Path) -> list:
    client = client_of(store)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], max_results=1000)


@needs_mlflow
def test_a_logged_run_reads_back_with_its_settings_curves_metrics_and_model(tmp_path):
    store = tmp_path / "results/mlruns"
    run = RunIdentity("final", "fold0", 1, "cross-validation")
    run_id = log(store, tmp_path, run)
    client = client_of(store)
    entry = client.get_run(run_id)
    assert entry.info.run_name == "final/fold0/seed1"
    assert entry.info.status == "FINISHED"
    tags = entry.data.tags
    assert {k: tags[k] for k in ("kind", "recipe", "fold", "seed")} == {
        "kind": "cross-validation",
        "recipe": "final",
        "fold": "fold0",
        "seed": "1",
    }
    assert json.loads(tags["changes"]) == {"depth": 3, "seed": 1}
    assert tags["chosen_recipe"] == "patch_size~8"
    assert entry.data.params == {
        "model.depth": "3",
        "model.patch_size": "8",
        "training.augment": "True",
        "training.lr": "0.001",
    }
    history = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.7), (2, 0.6), (3, 0.5)]
    assert [m.step for m in client.get_metric_history(run_id, "val_mcc")] == [1, 2, 3]
    metrics = entry.data.metrics
    assert metrics["chosen/val_mcc"] == 0.5
    assert metrics["chosen/val_roc_auc"] != metrics["chosen/val_roc_auc"]  # NaN kept as NaN
    assert (metrics["best_epoch"], metrics["epochs_run"], metrics["parameters"]) == (2, 3, 1234)
    assert (metrics["images_train"], metrics["images_val"]) == (30, 10)
    assert [a.path for a in client.list_artifacts(run_id)] == ["model.safetensors"]
    copy = client.download_artifacts(run_id, "model.safetensors", str(tmp_path / "back"))
    assert Path(copy).read_bytes() == b"weights"
    experiment = client.get_experiment(entry.info.experiment_id)
    assert experiment.name == EXPERIMENT
    assert experiment.artifact_location == (store / "artifacts").resolve().as_uri()


@needs_mlflow
def test_logging_a_run_again_replaces_its_entry(tmp_path):
    store = tmp_path / "mlruns"
    run = RunIdentity("final", "all", 0, "shipped")
    first = log(store, tmp_path, run)
    other = log(store, tmp_path, RunIdentity("patch_size~8", "all", 0, "sweep"))
    again = log(store, tmp_path, run, {**TRAINED, "val_mcc": 0.75})
    active = {r.info.run_id: r for r in active_runs(store)}
    assert set(active) == {other, again}
    assert active[again].data.metrics["chosen/val_mcc"] == 0.75
    client = client_of(store)
    assert client.get_run(first).info.lifecycle_stage == "deleted"  # kept until `mlflow gc`


@needs_mlflow
def test_an_adaptation_logs_its_adaptation_settings(tmp_path):
    store = tmp_path / "mlruns"
    adapted = {
        **{k: TRAINED[k] for k in ("model", "training", "chosen", "parameters")},
        "recipe": "adapt~finetune~n4",
        "fold": "draw0",
        "seed": 0,
        "adaptation": {"method": "finetune", "slices": 4, "classes": {"0": 2, "1": 2}},
        "best_epoch": 3,
        "epochs_run": 3,
        "images": {"train": 4, "val": 0},
    }
    run_id = log(
        store, tmp_path, RunIdentity("adapt~finetune~n4", "draw0", 0, "adaptation"), adapted
    )
    entry = client_of(store).get_run(run_id)
    assert entry.data.params["adaptation.method"] == "finetune"
    assert entry.data.params["adaptation.slices"] == "4"
    assert "adaptation.classes" not in entry.data.params
    assert not [k for k in entry.data.metrics if k.startswith("chosen/")]  # no validation split
    assert entry.data.metrics["best_epoch"] == 3


# One job's logging, in a process of its own.
LOG_ONE = """
import sys
from pathlib import Path

import pandas as pd

from vitct.pipeline.tracking import RunIdentity, log_run

store, n = Path(sys.argv[1]), sys.argv[2]
history = pd.DataFrame({"epoch": [1, 2], "train_loss": [0.7, 0.6]})
run = RunIdentity(f"recipe{n}", "all", 0, "sweep")
log_run(store, sys.argv[3], run, {"model.depth": 1}, history, {"best_epoch": 2}, [])
"""


@needs_mlflow
def test_parallel_jobs_on_a_new_store_all_log(tmp_path):
    """Three jobs at once on a store that does not exist yet (without the lock, SQLite's table
    creation races and some fail)."""
    store = tmp_path / "mlruns"
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", LOG_ONE, str(store), str(n), EXPERIMENT],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(3)
    ]
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0] * 3, "\n".join(outputs)
    assert sorted(r.info.run_name for r in active_runs(store)) == [
        f"recipe{n}/all/seed0" for n in range(3)
    ]


# --- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
@needs_mlflow
def test_turning_tracking_on_logs_every_finished_run_once_without_training_again(
    demo_run: Path, tmp_path: Path
):
    workdir = tmp_path / "tracked"
    shutil.copytree(demo_run, workdir, symlinks=True)  # keeps mtimes: nothing upstream reruns
    models = {
        p: p.stat().st_mtime_ns for p in (workdir / "results/runs").rglob("model.safetensors")
    }
    proc = snakemake(workdir, config=demo_run_config(tracking={"mlflow": True}))
    ran = set(re.findall(r"^(?:local)?rule (\w+):", proc.stderr + proc.stdout, re.MULTILINE))
    assert ran <= {"track", "all"}, ran  # logging only: the runs were trained before
    assert {p: p.stat().st_mtime_ns for p in models} == models

    store = workdir / "results/mlruns"
    client = client_of(store)
    (experiment,) = [e for e in client.search_experiments() if e.name.startswith("vitct on")]
    assert experiment.name == "vitct on synthetic demo data"
    entries = client.search_runs([experiment.experiment_id], max_results=1000)
    trained = sorted((workdir / "results/runs").glob("*/*/seed*/train_metrics.json"))
    names = ["/".join(p.parent.relative_to(workdir / "results/runs").parts) for p in trained]
    assert sorted(e.info.run_name for e in entries) == sorted(names)  # one entry per run
    kinds = {e.data.tags["kind"] for e in entries}
    assert kinds == {"sweep", "shipped", "cross-validation", "ablation"}
    for path, entry in zip(trained, sorted(entries, key=lambda e: e.info.run_name), strict=True):
        metrics = json.loads(path.read_text())
        assert entry.info.run_name == f"{metrics['recipe']}/{metrics['fold']}/seed{metrics['seed']}"
        assert entry.data.metrics["best_epoch"] == metrics["best_epoch"]
        assert entry.data.metrics["chosen/val_mcc"] == pytest.approx(metrics["val_mcc"])
        assert entry.data.params["training.lr"] == str(metrics["training"]["lr"])
        epochs = len(pd.read_csv(path.parent / "history.tsv", sep="\t"))
        assert len(client.get_metric_history(entry.info.run_id, "train_loss")) == epochs
        artifacts = {a.path for a in client.list_artifacts(entry.info.run_id)}
        assert artifacts == {"model.safetensors", "train_metrics.json"}
    assert jobs_to_run(workdir) == {}
