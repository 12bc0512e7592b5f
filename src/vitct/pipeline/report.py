"""The HTML report and results/summary.md: one self-contained page (figures embedded) that
leads with the cross-validation mean beside the shipped model's locked test, says which data
chose what, and shows every summary of the runs (vitct.evaluation.summaries), calibration
before and after temperature scaling among them."""

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

from vitct.data.dicom import DICOM_MODE, LUNG_WINDOW
from vitct.data.manifest import colour_mode_table
from vitct.data.nifti import NIFTI_MODE
from vitct.data.series import NO_LUNG, OUTSIDE, SLICE_RULE
from vitct.evaluation.scoring import TEST
from vitct.pipeline.model_card import model_card, to_html
from vitct.pipeline.tables import (
    CALIBRATION_NOTE,
    FLAG_NOTE,
    SHORTCUT_METER_NOTE,
    ablation_rows,
    adaptation_method,
    calibration_line,
    calibration_rows,
    curve_rows,
    flag_rows,
    headline_rows,
    loso_rows,
    markdown_table,
    memorisation_rows,
    part_title,
    shortcut_rows,
    source_line,
    source_rows,
    sweep_frame,
    test_metric_rows,
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


def card_of(inputs: dict, config: dict, sources: list[str], code_dir) -> list[tuple]:
    """The model card's blocks (vitct.pipeline.model_card) from the report's inputs; `sources`
    names the training sources, in the order of the `receipts` input."""
    return model_card(
        _json(inputs["summary"]),
        {name: _json(path) for name, path in zip(sources, inputs["receipts"], strict=True)},
        _json(inputs["partition"]),
        _json(inputs["shipped"]),
        config,
        _read_table(inputs["loso"]),
        _read_table(inputs["curve"]),
        git_revision(Path(code_dir)),
    )


def input_note(manifest: pd.DataFrame, left_out: int) -> str:
    """What the images are: 8-bit slices, or CT in HU (DICOM series, NIfTI volumes) with the
    window, the slice rule and the patients that are the groups; "" for slices alone."""
    hounsfield = manifest["mode"].isin([DICOM_MODE, NIFTI_MODE])
    if not hounsfield.any():
        return ""
    level, width = LUNG_WINDOW
    patients = manifest.patient[hounsfield & (manifest.patient != "")].nunique()
    return (
        f"{int(hounsfield.sum())} slices read from CT in Hounsfield units (DICOM series or NIfTI "
        f"volumes) of {patients} patients (hashed: no identifying header value is kept), each "
        f"patient one group that the splits keep whole; windowed at level {level:g}, width "
        f"{width:g} HU; slices chosen by the {SLICE_RULE} ({left_out} slices outside it left "
        "out). The model file records the window and the rule, and vitct predict reads DICOM "
        "and NIfTI by them."
    )


def build_report(
    inputs: dict, config: dict, benchmarks: str | Path, code_dir, model: str, card: list[tuple]
) -> str:
    """The report's HTML, the model card (`card`, from card_of) among its sections."""
    headline = _json(inputs["summary"])
    receipt = _json(inputs["receipt"])
    partition = _json(inputs["partition"])
    shipped_run = _json(inputs["shipped"])
    manifest = pd.read_csv(inputs["manifest"], sep="\t", keep_default_na=False)
    rejects = pd.read_csv(inputs["rejects"], sep="\t", keep_default_na=False)
    # slices a series leaves out by the slice rule: counted, not listed one by one
    left_out = rejects.reason.str.startswith((OUTSIDE, NO_LUNG))
    rejects, left_out = rejects[~left_out], int(left_out.sum())
    ablation = _read_table(inputs["ablation"])  # empty without variants
    loso = _read_table(inputs["loso"])  # empty with one training source
    curve = _read_table(inputs["curve"])  # empty without an adaptation site
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
        calibration=_rows_table(calibration_rows(headline)),
        calibration_note=CALIBRATION_NOTE,
        unseen=headline["shipped"].get("test_no_near_duplicate_seen", {}),
        folds=_table(pd.read_csv(inputs["folds"], sep="\t"), index=False),
        shortcut=_rows_table(shortcut_rows(headline)),
        flags=_rows_table(flag_rows(headline)),
        flag_note=FLAG_NOTE,
        by_source=_rows_table(source_rows(headline)),
        loso=_rows_table(loso_rows(loso)) if len(loso) else "",
        curve=_rows_table(curve_rows(curve)) if len(curve) else "",
        site=partition.get("site"),
        adaptation=config["adaptation"],
        adaptation_method=adaptation_method(config["adaptation"]),
        model_card=to_html(card),
        shortcut_note=SHORTCUT_METER_NOTE,
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
        input_note=input_note(manifest, left_out),
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


def summary_markdown(headline: dict, receipt: dict, strategy: str) -> str:
    """The headline as a short markdown table under its one-line source, then which data chose
    what and the calibration line, then the shortcut meter under its note."""
    lines = [
        source_line(receipt, headline, strategy),
        "",
        *markdown_table(headline_rows(headline)),
    ]
    protocol = headline["protocol"]
    lines += [
        "",
        f"Chosen on validation data only: each run's epoch and flag threshold on "
        f"{protocol['epoch_and_threshold']}; the recipe as {protocol['recipe']}.",
    ]
    lines += [f"Optimistic by a choice: {item}." for item in protocol["optimistic"]]
    calibrated = calibration_line(headline)
    if calibrated:
        lines.append(calibrated)
    meter = shortcut_rows(headline)
    if meter:
        lines += ["", SHORTCUT_METER_NOTE, "", *markdown_table(meter)]
    return "\n".join(lines) + "\n"
