"""The HTML report: one self-contained file (figures embedded) that says which data made it."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path

import pandas as pd
import yaml
from jinja2 import Environment, PackageLoader, select_autoescape

from vitct.manifest import colour_mode_table
from vitct.split import split_summary
from vitct.summary import (
    SHORTCUT_METER_NOTE,
    external_rows,
    headline_rows,
    shortcut_rows,
    source_line,
)

PACKAGES = (
    "vitct",
    "torch",
    "numpy",
    "pandas",
    "scikit-learn",
    "snakemake",
    "matplotlib",
    "seaborn",
    "pillow",
    "safetensors",
)
SWEEP_COLUMNS = [
    "val_accuracy",
    "val_mcc",
    "val_roc_auc",
    "val_f1",
    "val_loss",
    "best_epoch",
    "parameters",
]
TEST_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "mcc", "roc_auc")


def embed_png(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision(where: Path) -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=where,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            text=True,
            capture_output=True,
        ).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def benchmark_table(folder: str | Path) -> pd.DataFrame:
    """Run time and peak memory per job from the rules' benchmark files."""
    rows = []
    for path in sorted(Path(folder).rglob("*.tsv")):
        b = pd.read_csv(path, sep="\t")
        job = str(path.relative_to(folder).with_suffix(""))
        rows.append({"job": job, "seconds": b["s"].iloc[0], "max_rss_mb": b["max_rss"].iloc[0]})
    return pd.DataFrame(rows, columns=["job", "seconds", "max_rss_mb"])


def _table(frame: pd.DataFrame, **kw) -> str:
    """An HTML table in a box of its own that scrolls sideways when the table is wider than the
    page, so the page itself never does. Column names are shown with spaces for underscores,
    so that a header can wrap between words."""
    frame = frame.rename(columns=lambda name: str(name).replace("_", " "))
    html = frame.to_html(classes="table", border=0, float_format=lambda v: f"{v:.4g}", **kw)
    return f'<div class="scroll">{html}</div>'


def _json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def headline(inputs: dict, config: dict) -> tuple[list[dict], str]:
    """The report's first table (the ViT beside both baselines) and the line on its data."""
    metrics = _json(inputs["metrics"])
    strategy = config["split"]["strategy"]
    parameters = _json(inputs["train_metrics"])["parameters"]
    rows = headline_rows(metrics, _json(inputs["baselines"]), strategy, parameters)
    for name in config["evaluation"].get("external", {}):
        external = external_rows(name, _json(inputs[f"external_{name}_metrics"]))
        rows += [{title: row.get(title, "") for title in rows[0]} for row in external]
    return rows, source_line(_json(inputs["receipt"]), metrics["n"], strategy)


def shortcut_meter(inputs: dict) -> list[dict]:
    """The shortcut meter's rows: the test split, then each external set."""
    return shortcut_rows(_json(inputs["shortcut_meter"]))


def _strategy_table(baselines: dict) -> str:
    rows = []
    for strategy in ("random", "grouped"):
        knn = baselines["nearest_neighbour"][strategy]
        grey = baselines["grey_histogram"][strategy]
        unseen = knn["no_near_duplicate_in_train"]
        rows.append(
            {
                "split strategy": strategy
                + (" (used)" if strategy == baselines["used_strategy"] else ""),
                "test images with a near-duplicate training slice": (
                    f"{knn['test_with_near_duplicate_in_train']:.1%}"
                ),
                "1-NN accuracy": knn["all_test"]["accuracy"],
                "1-NN MCC": knn["all_test"]["mcc"],
                "1-NN accuracy, no near-duplicate": unseen.get("accuracy", float("nan")),
                "n, no near-duplicate": unseen.get("n", 0),
                "grey-histogram accuracy": grey["all_test"]["accuracy"],
                "grey-histogram MCC": grey["all_test"]["mcc"],
            }
        )
    return _table(pd.DataFrame(rows), index=False)


def _versus_baselines(metrics: dict, baselines: dict, strategy: str) -> list[dict]:
    """ViT against both baselines, overall and on the test images with no near-duplicate."""
    knn, grey = baselines["nearest_neighbour"][strategy], baselines["grey_histogram"][strategy]
    rows = []
    for label, subset in (
        ("all test images", "all_test"),
        ("test images with no near-duplicate training slice", "no_near_duplicate_in_train"),
    ):
        vit = metrics if subset == "all_test" else metrics.get(subset, {})
        if vit and knn[subset]:
            rows.append(
                {
                    "subset": label,
                    "n": vit["n"],
                    "vit": vit["accuracy"],
                    "knn": knn[subset]["accuracy"],
                    "grey": grey[subset]["accuracy"],
                }
            )
    return rows


def _external_sets(inputs: dict, config: dict) -> list[dict]:
    """Per external set: its size, rejects, groups, the variants' table and reliability figure."""
    sets = []
    for name, path in config["evaluation"].get("external", {}).items():
        metrics = _json(inputs[f"external_{name}_metrics"])
        variants = pd.read_csv(inputs[f"external_{name}_variants"], sep="\t")
        sets.append(
            {
                "name": name,
                "path": path,
                "n": metrics["n"],
                "rejected": metrics["rejected_files"],
                "groups": metrics["near_duplicate_groups"],
                "covid_share": metrics["predicted_covid_share"],
                "flagged_share": metrics.get("flagged_share"),
                "variants": _table(variants, index=False),
                "reliability": embed_png(inputs[f"external_{name}_reliability"]),
            }
        )
    return sets


def build_report(inputs: dict, config: dict, benchmarks: str | Path, code_dir: str | Path) -> str:
    receipt = _json(inputs["receipt"])
    manifest = pd.read_csv(inputs["manifest"], sep="\t", keep_default_na=False)
    rejects = pd.read_csv(inputs["rejects"], sep="\t", keep_default_na=False)
    split = pd.read_csv(inputs["split"], sep="\t", keep_default_na=False)
    summary = pd.read_csv(inputs["summary"], sep="\t")
    best = _json(inputs["best"])
    metrics = _json(inputs["metrics"])
    train_metrics = _json(inputs["train_metrics"])
    metric_col = best["selection_metric"]
    summary = summary.sort_values(metric_col, ascending=False)
    params = list(best["params"])
    bench = benchmark_table(benchmarks)
    baselines = _json(inputs["baselines"])
    summary_rows, source = headline(inputs, config)
    ci = metrics.get("ci95", {})
    test_metrics = pd.DataFrame(
        [
            {
                "metric": m,
                "value": metrics[m],
                "95% CI": "[{:.3f}, {:.3f}]".format(*ci[m]) if m in ci else "",
            }
            for m in TEST_METRICS
        ]
    )
    ablation = ""
    if "ablation_table" in inputs:
        ablation = _table(
            pd.read_csv(inputs["ablation_table"], sep="\t", keep_default_na=False), index=False
        )
    cv = json.loads(Path(inputs["cv_headline"]).read_text()) if "cv_headline" in inputs else None
    env = Environment(loader=PackageLoader("vitct"), autoescape=select_autoescape())
    template = env.get_template("report.html")
    return template.render(
        receipt=receipt,
        n_images=len(manifest),
        n_duplicates=int((manifest.duplicate_of != "").sum()),
        colour_modes=_table(colour_mode_table(manifest)),
        rejects=_table(rejects, index=False) if len(rejects) else "",
        split=_table(split_summary(split)),
        config=yaml.safe_dump(config, sort_keys=False),
        sweep=_table(summary[params + SWEEP_COLUMNS], index=False),
        n_runs=len(summary),
        best=best,
        final_params=train_metrics["params"],
        final_model=train_metrics["model"],
        final_parameters=train_metrics["parameters"],
        best_epoch=train_metrics["best_epoch"],
        epochs_run=train_metrics["epochs_run"],
        summary=_table(pd.DataFrame(summary_rows), index=False),
        shortcut=_table(pd.DataFrame(shortcut_meter(inputs)), index=False),
        shortcut_note=SHORTCUT_METER_NOTE,
        shortcut_input=_json(inputs["shortcut_meter"])["model_input"],
        source=source,
        test_metrics=_table(test_metrics, index=False),
        ablation=ablation,
        cv=cv,
        external=_external_sets(inputs, config),
        cv_rows=_cv_rows(cv) if cv else [],
        cv_folds=_table(pd.read_csv(inputs["cv_folds"], sep="\t"), index=False) if cv else "",
        cv_figure=embed_png(inputs["cv_figure"]) if cv else "",
        cv_ablation=_table(pd.read_csv(inputs["cv_ablation"], sep="\t"), index=False)
        if "cv_ablation" in inputs
        else "",
        ablation_figure=embed_png(inputs["ablation_figure"]) if ablation else "",
        metrics=metrics,
        figures={
            k: embed_png(inputs[k])
            for k in ("grid", "curves", "confusion", "roc", "patch_grid", "rollout")
        },
        head_figures=[embed_png(p) for p in inputs["heads"]],
        strategy=config["split"]["strategy"],
        strategies=_strategy_table(baselines),
        groups=baselines["groups"],
        groups_threshold=baselines["nearest_neighbour"]["random"]["threshold"],
        versus=_versus_baselines(metrics, baselines, config["split"]["strategy"]),
        versions=package_versions(),
        revision=git_revision(Path(code_dir)),
        seeds={
            "split": config["split"]["seed"],
            "training": config["training"]["seed"],
            "demo data": config["dataset"]["demo"]["seed"],
        },
        benchmarks=_table(bench, index=False) if len(bench) else "",
        total_seconds=float(bench["seconds"].sum()) if len(bench) else 0.0,
    )


def _cv_rows(cv: dict) -> list[dict]:
    """The cross-validation headline beside the locked test: value [95% interval] per metric."""

    def cells(values: dict, intervals: dict) -> dict:
        out = {}
        for m in ("accuracy", "mcc", "roc_auc"):
            low, high = intervals.get(m, [float("nan")] * 2)
            out[m] = f"{values.get(m, float('nan')):.3f} [{low:.3f}, {high:.3f}]"
        return out

    baselines = {
        name: {m: f"{v:.3f}" for m, v in scores.items()} for name, scores in cv["baselines"].items()
    }
    external = []
    for name, scored in cv.get("external", {}).items():
        external += [
            {
                "name": f"external set {name}: fold models' mean",
                **cells(scored["cv"], scored["cv_ci95"]),
            },
            {
                "name": f"external set {name}: ensemble of the fold models",
                **cells(scored["ensemble"], scored["ensemble_ci95"]),
            },
        ]
    return [
        {"name": "cross-validation mean (held-out folds)", **cells(cv["cv"], cv["cv_ci95"])},
        {"name": "locked test: final model", **cells(cv["final_test"], cv["final_test_ci95"])},
        {
            "name": "locked test: ensemble of the fold models",
            **cells(cv["ensemble_test"], cv["ensemble_test_ci95"]),
        },
        *external,
        {"name": "1-NN on pixels, same folds", **baselines["nearest_neighbour"]},
        {"name": "grey-level histogram, same folds", **baselines["grey_histogram"]},
    ]
