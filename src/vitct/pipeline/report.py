"""The HTML report and results/summary.md: one self-contained page (figures embedded) that
leads with the cross-validation mean beside the shipped model's locked test, says which data
chose what, and shows every summary of the runs (vitct.evaluation.summaries)."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import math
import platform
import subprocess
from pathlib import Path

import pandas as pd
import yaml
from jinja2 import Environment, PackageLoader, select_autoescape

from vitct.data.manifest import colour_mode_table
from vitct.evaluation.baselines import TITLES
from vitct.evaluation.scoring import EXTERNAL_PREFIX, HELD_OUT, TEST

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
METRICS = (("accuracy", "accuracy"), ("mcc", "MCC"), ("roc_auc", "ROC-AUC"))
TEST_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "mcc", "roc_auc")
FLAGGED = "flagged unfamiliar"
SHORTCUT_METER_NOTE = (
    "Shortcut meter: the grey-level histogram classifier refitted on the final recipe's own "
    "input (its images after all preprocessing), fitted on the images each run saw. It reads only "
    "the global grey levels of what the ViT sees: near 0.5 accuracy, grey levels alone no longer "
    "tell the classes apart there (the shortcut is gone); near 1.0, they still give the label "
    "away."
)


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


def _number(value, interval=None) -> str:
    """A metric as text, its interval beside it; empty where there is none (never NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = f"{value:.3f}"
    if interval and not any(v is None or math.isnan(v) for v in interval):
        text += " [{:.3f}, {:.3f}]".format(*interval)
    return text


def _share(value) -> str:
    return (
        "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"
    )


def _cells(scored: dict | None) -> dict:
    scored = scored or {}
    intervals = scored.get("ci95", {})
    return {f"{title} [95% CI]": _number(scored.get(k), intervals.get(k)) for k, title in METRICS}


def part_title(part: str) -> str:
    if part == HELD_OUT:
        return "held-out folds"
    if part == TEST:
        return "locked test"
    return "external set " + part.removeprefix(EXTERNAL_PREFIX)


def headline_rows(headline: dict) -> list[dict]:
    """The report's first table: the cross-validation mean beside the shipped model's locked
    test, the fold models there, the baselines on the same images, then every external set."""
    cv, shipped = headline["cv"], headline["shipped"]
    fold_models, baselines = headline["fold_models"], headline["baselines"]
    rows = []

    def row(model: str, part: str, scored: dict | None, flagged: bool = True) -> None:
        if scored:
            rows.append(
                {
                    "model": model,
                    "scored on": f"{part_title(part)} (n = {scored['n']})",
                    **_cells(scored),
                    FLAGGED: _share(scored.get("flagged_share")) if flagged else "",
                }
            )

    if cv:
        runs = f"{cv['folds']} folds x {len(cv['seeds'])} seed(s)"
        row(f"ViT, final recipe: cross-validation mean over {runs}", HELD_OUT, cv)
    row("ViT, shipped model", TEST, shipped.get(TEST))
    parts = [TEST, *sorted(p for p in shipped if p.startswith(EXTERNAL_PREFIX))]
    for part in parts:
        if part != TEST:
            row("ViT, shipped model", part, shipped.get(part))
        if part in fold_models:
            row("ViT, fold models' mean", part, fold_models[part]["mean"])
            row("ViT, ensemble of the fold models", part, fold_models[part]["ensemble"])
        for name in ("pixels_1nn", "grey_histogram"):
            if name in baselines:
                if part == TEST and cv:
                    row(TITLES[name], HELD_OUT, baselines[name].get(HELD_OUT), flagged=False)
                row(TITLES[name], part, baselines[name].get(part), flagged=False)
    for r in rows:
        if r["model"].startswith("1-NN"):
            r["ROC-AUC [95% CI]"] = ""  # its 0/1 votes rank nothing
    return rows


def source_line(receipt: dict, headline: dict, strategy: str) -> str:
    """On what: how many images, of which data, split how, intervals of what."""
    counts = receipt.get("counts", {})
    per_class = ", ".join(f"{n:,} {name}" for name, n in counts.items())
    if receipt.get("real_data"):
        data = f"real CT slices ({per_class}; {receipt.get('origin', 'origin unknown')})"
    else:
        data = f"synthetic demo slices, NOT real CT data ({per_class})"
    test = headline["shipped"].get(TEST, {}).get("n", 0)
    return (
        f"{sum(counts.values()):,} {data}; a locked test split of {test:,} images "
        f"({strategy} split), the rest in grouped folds; COVID is the positive class; 95% "
        "cluster-bootstrap intervals (near-duplicate groups resampled)."
    )


def shortcut_rows(headline: dict) -> list[dict]:
    meter = headline["baselines"].get("shortcut_meter", {})
    return [{"scored on": part_title(p), **_cells(s)} for p, s in sorted(meter.items())]


def ablation_rows(ablation: pd.DataFrame) -> list[dict]:
    """The ablation table as the report shows it: each recipe's mean with its interval, the
    paired difference from the final recipe, and the verdict, in as few columns as it takes."""
    rows = []
    for r in ablation.itertuples():
        final = r.variant == "final"
        rows.append(
            {
                "scored on": r.scored_on,
                "recipe": "final recipe" if final else f"{r.variant} ({r.changes})",
                "runs": r.runs,
                "accuracy [95% CI]": _number(r.accuracy, (r.accuracy_low, r.accuracy_high)),
                "final minus this, accuracy points": ""
                if final
                else _points(r.accuracy_points, r.accuracy_points_low, r.accuracy_points_high),
                "final minus this, MCC points": ""
                if final
                else _points(r.mcc_points, r.mcc_points_low, r.mcc_points_high),
                "distinguishable": "" if final else ("yes" if r.distinguishable else "no"),
            }
        )
    return rows


def _points(value, low, high) -> str:
    if value is None or math.isnan(value):
        return ""
    bounds = "" if math.isnan(low) else f" [{low:+.1f}, {high:+.1f}]"
    return f"{value:+.1f}{bounds}"


def sweep_frame(sweep: pd.DataFrame, grid: list[str], metric: str) -> pd.DataFrame:
    """The sweep table's columns a reader needs, best combination first."""
    column = f"val_{metric}"
    keep = [*grid, column, *([f"{column}_se"] if f"{column}_se" in sweep else [])]
    keep += [c for c in ("val_accuracy", "val_roc_auc", "val_loss", "best_epoch") if c != column]
    keep += ["folds", "parameters"]
    return sweep[keep].sort_values(column, ascending=False)


def test_metric_rows(test: dict) -> list[dict]:
    """The shipped model's every metric on the locked test, its interval where it has one."""
    intervals = test.get("ci95", {})
    return [
        {"metric": m, "value": _number(test.get(m)), "95% CI": _number(None)}
        | ({"95% CI": "[{:.3f}, {:.3f}]".format(*intervals[m])} if m in intervals else {})
        for m in TEST_METRICS
    ]


def memorisation_rows(partition: dict) -> list[dict]:
    """Under each way of dealing the locked test: how many of its images have a near-copy
    outside it, and how well the 1-NN on pixels, which can only memorise, does on them."""
    return [
        {
            "locked test dealt": strategy
            + (" (used)" if strategy == partition["strategy"] else ""),
            "test images": check["test_images"],
            "with a near-duplicate outside the test split": _share(
                check["test_with_near_duplicate_outside"]
            ),
            "1-NN on pixels, test accuracy": f"{check['pixels_1nn_test_accuracy']:.3f}",
        }
        for strategy, check in partition["memorisation"].items()
    ]


def _read_table(path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t")
    except pd.errors.EmptyDataError:  # a summary with no rows (no ablation variants)
        return pd.DataFrame()


def _table(frame: pd.DataFrame, **kw) -> str:
    """An HTML table; column names with spaces for underscores, so that headers wrap."""
    frame = frame.rename(columns=lambda name: str(name).replace("_", " "))
    html = frame.to_html(
        classes="table", border=0, na_rep="", float_format=lambda v: f"{v:.4g}", **kw
    )
    return f'<div class="scroll">{html}</div>'


def _rows_table(rows: list[dict]) -> str:
    return _table(pd.DataFrame(rows), index=False) if rows else ""


def _json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def build_report(inputs: dict, config: dict, benchmarks: str | Path, code_dir, model: str) -> str:
    headline = _json(inputs["summary"])
    receipt = _json(inputs["receipt"])
    partition = _json(inputs["partition"])
    shipped_run = _json(inputs["shipped"])
    manifest = pd.read_csv(inputs["manifest"], sep="\t", keep_default_na=False)
    rejects = pd.read_csv(inputs["rejects"], sep="\t", keep_default_na=False)
    ablation = _read_table(inputs["ablation"])  # empty without variants
    grid, metric = list(config["sweep"]["grid"]), config["training"]["selection_metric"]
    sweep = sweep_frame(pd.read_csv(inputs["sweep"], sep="\t"), grid, metric)
    test = headline["shipped"].get(TEST, {})
    bench = benchmark_table(benchmarks)
    attention = inputs["attention"]
    env = Environment(loader=PackageLoader("vitct.pipeline"), autoescape=select_autoescape())
    return env.get_template("report.html").render(
        receipt=receipt,
        source=source_line(receipt, headline, config["split"]["strategy"]),
        headline=_rows_table(headline_rows(headline)),
        cv=headline["cv"],
        inside=headline.get("test_inside_cv_interval"),
        protocol=headline["protocol"],
        shipped=headline["shipped"],
        shipped_run=shipped_run,
        model_path=model,
        test=test,
        test_metrics=_rows_table(test_metric_rows(test)),
        unseen=headline["shipped"].get("test_no_near_duplicate_seen", {}),
        folds=_table(pd.read_csv(inputs["folds"], sep="\t"), index=False),
        shortcut=_rows_table(shortcut_rows(headline)),
        shortcut_note=SHORTCUT_METER_NOTE,
        external=[p for p in headline["shipped"] if p.startswith(EXTERNAL_PREFIX)],
        part_title=part_title,
        ablation=_rows_table(ablation_rows(ablation)) if len(ablation) else "",
        cross_validated=bool(config["ablation"]["cross_validate"] and headline["cv"]),
        sweep=_table(sweep, index=False),
        grid_runs=headline["protocol"]["grid_runs"],
        memorisation=_rows_table(memorisation_rows(partition)),
        groups=partition["groups"],
        threshold=config["split"]["near_duplicate_threshold"],
        partition=partition,
        n_images=len(manifest),
        n_duplicates=int((manifest.duplicate_of != "").sum()),
        colour_modes=_table(colour_mode_table(manifest)),
        rejects=_table(rejects, index=False) if len(rejects) else "",
        config=yaml.safe_dump(config, sort_keys=False),
        figures={
            k: embed_png(inputs[k])
            for k in inputs
            if k.endswith(("_figure", "confusion", "roc", "reliability"))
        },
        curves=embed_png(inputs["curves"]),
        attention={
            "patch_grid": embed_png(attention[0]),
            "rollout": embed_png(attention[-1]),
            "heads": [embed_png(p) for p in attention[1:-1]],
        },
        versions=package_versions(),
        revision=git_revision(Path(code_dir)),
        seeds={
            "split": config["split"]["seed"],
            "training": config["training"]["seed"],
            "folds": config["evaluation"]["seeds"],
            "demo data": config["dataset"]["demo"]["seed"],
        },
        benchmarks=_table(bench, index=False) if len(bench) else "",
        total_seconds=float(bench["seconds"].sum()) if len(bench) else 0.0,
    )


def _markdown_table(rows: list[dict]) -> list[str]:
    titles = list(rows[0])
    lines = ["| " + " | ".join(titles) + " |", "|" + " --- |" * len(titles)]
    return lines + ["| " + " | ".join(row[t] for t in titles) + " |" for row in rows]


def summary_markdown(headline: dict, receipt: dict, strategy: str) -> str:
    """The headline as a short markdown table under its one-line source, then which data chose
    what, then the shortcut meter under its note."""
    lines = [
        source_line(receipt, headline, strategy),
        "",
        *_markdown_table(headline_rows(headline)),
    ]
    protocol = headline["protocol"]
    lines += [
        "",
        f"Chosen on validation data only: each run's epoch and flag threshold on "
        f"{protocol['epoch_and_threshold']}; the recipe as {protocol['recipe']}.",
    ]
    lines += [f"Optimistic by a choice: {item}." for item in protocol["optimistic"]]
    meter = shortcut_rows(headline)
    if meter:
        lines += ["", SHORTCUT_METER_NOTE, "", *_markdown_table(meter)]
    return "\n".join(lines) + "\n"
