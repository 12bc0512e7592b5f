"""Optional run tracking (config key tracking.mlflow): one training run of the pipeline logged to
the local MLflow store in results/mlruns, for comparing runs side by side in `mlflow ui`.

Each run (a grid run, a final run, an ablation variant, an adaptation) becomes one entry named
RECIPE/FOLD/seedSEED in the store's experiment for its data (one per pipeline: the store lives
in its results/), tagged with its kind (sweep, shipped, cross-validation, leave-source-out,
ablation, adaptation), recipe, fold and seed; its settings are the params, every numeric column
of its history.tsv a per-epoch metric (step = epoch), its chosen epoch's inner-validation
numbers the final metrics (`chosen/val_mcc`, ...), and its model file and train_metrics.json
the artifacts. Logging a run again (Snakemake reran it) deletes the older entry of the same
name, so the store shows what results/runs holds; deleted entries stay visible under the UI's
"Deleted" filter until `mlflow gc` purges them.

The store is SQLite (results/mlruns/mlflow.db, artifacts in results/mlruns/artifacts): MLflow 3
refuses its file store unless told otherwise (it is in maintenance mode). Parallel jobs write
one at a time under a lock file: SQLite fails when several processes create MLflow's tables at
once (they race on its schema migrations), and one experiment must be created once.

mlflow is imported only inside log_run: with tracking off the workflow has no job that calls it,
and the training steps never import this module.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vitct.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

DATABASE = "mlflow.db"
ARTIFACTS = "artifacts"
LOCK = ".lock"
INSTALL = "pip install -e '.[tracking]'"
# Sections of train_metrics.json whose keys are the run's settings (params `section.key`).
SETTINGS = ("model", "training", "adaptation")
# Numbers of train_metrics.json (besides the chosen epoch's val_*) logged as final metrics.
COUNTS = ("best_epoch", "epochs_run", "parameters")


class TrackingError(UserError):
    """Tracking is on but cannot log; the message says what to install or change."""


@dataclass(frozen=True)
class RunIdentity:
    """Which run an entry is: its folder's names and its kind (vitct.pipeline.plan)."""

    recipe: str
    fold: str
    seed: int
    kind: str

    @property
    def name(self) -> str:
        return f"{self.recipe}/{self.fold}/seed{self.seed}"

    def tags(self) -> dict[str, str]:
        return {"kind": self.kind, "recipe": self.recipe, "fold": self.fold, "seed": str(self.seed)}


def run_kind(plan, run) -> str:
    """What a run (vitct.pipeline.plan's Run of `plan`) is for: `sweep` (a grid run), `shipped`
    (the final recipe on all non-test images), `cross-validation` (on a fold),
    `leave-source-out`, `ablation` (a variant) or `adaptation`: the tag that groups one
    pipeline's runs in the UI."""
    # Here, not at the top: the track jobs need none of the plan's imports (scikit-learn).
    from vitct.data.partition import ALL, LEAVE_OUT
    from vitct.pipeline.plan import ADAPT, FINAL

    if run.recipe.startswith(ADAPT):
        return "adaptation"
    if not plan.tuned(run.recipe):
        return "sweep"
    if run.recipe != FINAL:
        return "ablation"
    if run.fold == ALL:
        return "shipped"
    return "leave-source-out" if run.fold.startswith(LEAVE_OUT) else "cross-validation"


def require_mlflow() -> None:
    """Raise TrackingError, saying what to install, when mlflow cannot be imported here (looked
    up without importing it)."""
    if importlib.util.find_spec("mlflow") is None:
        raise TrackingError(
            f"tracking.mlflow is on, but MLflow is not installed in this environment "
            f"({sys.executable}): {INSTALL}, or set tracking.mlflow: false"
        )


def store_uri(store: Path) -> str:
    """The tracking URI of the store folder (what `mlflow ui --backend-store-uri` takes)."""
    return f"sqlite:///{(Path(store) / DATABASE).resolve()}"


def experiment_name(dataset: dict) -> str:
    """One experiment per store, named after the data its runs trained on: data of another
    source start another experiment, whose runs are never compared with these."""
    source = dataset["source"]
    if source == "kaggle":
        where = f"kaggle:{dataset['kaggle_dataset']}"
    elif source == "demo":
        where = "synthetic demo data"
    else:
        where = f"{source}:{dataset['path']}"
    return f"vitct on {where}"


def run_record(metrics: dict) -> tuple[dict, dict, dict]:
    """(settings, final metrics, extra tags) of a run from its train_metrics.json: the model,
    training (and adaptation) settings flattened to `section.key`; the chosen epoch's
    inner-validation numbers, the epoch counts and the images; what it changed and chose."""
    settings = {}
    for section in SETTINGS:
        for key, value in (metrics.get(section) or {}).items():
            if not isinstance(value, dict):  # an adaptation's class counts are no setting
                settings[f"{section}.{key}"] = value
    final = {f"chosen/{k}": v for k, v in metrics.items() if k.startswith("val_")}
    final.update({k: metrics[k] for k in COUNTS if k in metrics})
    final.update({f"images_{k}": v for k, v in (metrics.get("images") or {}).items()})
    tags = {"changes": json.dumps(metrics.get("changes", {}), sort_keys=True)}
    if metrics.get("chosen"):
        tags["chosen_recipe"] = metrics["chosen"]["recipe"]
    if metrics.get("manifest_sha256"):
        tags["manifest_sha256"] = metrics["manifest_sha256"]
    return settings, final, tags


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on `path` (created if missing) for the block: one writer at a
    time among the pipeline's parallel jobs (all on this machine: the track rule is local)."""
    import fcntl

    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # an empty file: only its lock counts
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # which releases the lock


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isinf(number) else number


def log_run(
    store: Path,
    experiment: str,
    run: RunIdentity,
    settings: dict,
    history: pd.DataFrame,
    metrics: dict,
    files: list[Path],
    tags: dict | None = None,
) -> str:
    """Log one run to the store as a new entry (and delete older entries of the same run in the
    experiment); return the entry's run id. `history` has one row per epoch and an `epoch`
    column; `metrics` are the final numbers; `files` become the entry's artifacts."""
    require_mlflow()
    # A pipeline that sends nothing anywhere: MLflow's usage telemetry stays off unless asked.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunStatus, ViewType

    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    now = int(time.time() * 1000)
    points = []
    for column in history.columns.drop("epoch"):
        for epoch, value in zip(history["epoch"], history[column], strict=True):
            if (number := _number(value)) is not None:
                points.append(Metric(column, number, now, int(epoch)))
    for key, value in metrics.items():
        if (number := _number(value)) is not None:
            points.append(Metric(key, number, now, 0))
    params = [Param(key, str(value)) for key, value in sorted(settings.items())]
    with _locked(store / LOCK):
        client = MlflowClient(tracking_uri=store_uri(store))
        found = client.get_experiment_by_name(experiment)
        if found is None:
            experiment_id = client.create_experiment(
                experiment, artifact_location=(store / ARTIFACTS).resolve().as_uri()
            )
        else:
            experiment_id = found.experiment_id
            if found.lifecycle_stage == "deleted":  # deleted in the UI: this run brings it back
                client.restore_experiment(experiment_id)
        entry = client.create_run(
            experiment_id, run_name=run.name, tags={**run.tags(), **(tags or {})}
        ).info.run_id
        try:
            client.log_batch(entry, metrics=points, params=params)
            for path in files:
                client.log_artifact(entry, str(path))
        except BaseException:
            client.set_terminated(entry, RunStatus.to_string(RunStatus.FAILED))
            raise
        client.set_terminated(entry, RunStatus.to_string(RunStatus.FINISHED))
        older = client.search_runs(
            [experiment_id],
            filter_string=f"attributes.run_name = '{run.name}'",
            run_view_type=ViewType.ACTIVE_ONLY,
        )
        for other in older:
            if other.info.run_id != entry:
                client.delete_run(other.info.run_id)
    return entry
