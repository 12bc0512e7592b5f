"""The parts of benchmarks/gpu_pipeline.sh: the data cache's trip in parts, the GPU slots the
training rules declare, the split of the pipeline into its `main` and `ablation` stages, what
`auto` does with a measured GPU, and the files the figures are read from. The tests that run
Snakemake are slow (pytest -m slow); the script itself is run on the CPU path by hand
(benchmarks/README.md)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, jobs_to_run, snakemake, tiny_config, write_config

from vitct.training import accelerator
from vitct.training.loop import log_device_figures


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gpu_bundle = load_benchmark("gpu_bundle")
pipeline_figures = load_benchmark("pipeline_figures")
auto_settings = load_benchmark("auto_settings")
pipeline_stages = load_benchmark("pipeline_stages")


# What a dry run of the whole pipeline prints of its preprocess jobs (and other lines around).
DRY_RUN = """
rule preprocess:
    input: results/data/dataset/source.json, results/data/dataset/manifest.tsv
    output: results/data/dataset/images_64px_lungs_standardise.npz
rule preprocess:
    output: results/data/dataset/images_224px_lungs_standardise.npz
rule preprocess:
    output: results/data/scanner_b/images_64px_lungs_standardise.npz
rule partition:
    input: results/data/dataset/manifest.tsv, results/data/dataset/images_64px_lungs_standardise.npz
    output: results/data/partition.tsv, results/data/partition.json
"""


def test_the_bundle_takes_every_data_set_and_every_cache_a_run_reads():
    assert gpu_bundle.data_targets(DRY_RUN) == [
        "dataset/source.json",
        "dataset/manifest.tsv",
        "dataset/rejects.tsv",
        "scanner_b/source.json",
        "scanner_b/manifest.tsv",
        "scanner_b/rejects.tsv",
        "dataset/images_224px_lungs_standardise.npz",
        "dataset/images_64px_lungs_standardise.npz",
        "scanner_b/images_64px_lungs_standardise.npz",
    ]
    with pytest.raises(gpu_bundle.BundleError, match="no preprocess job"):
        gpu_bundle.data_targets("rule partition:\n    output: results/data/partition.tsv\n")


def fake_data_steps(folder: Path) -> dict:
    """Files as the pipeline's data steps write them (the training source and one external set,
    each in its folder of results/data), and the record `make` keeps of them."""
    rng = np.random.default_rng(0)
    names = []
    for data_set in ("dataset", "scanner_b"):
        (folder / data_set).mkdir(parents=True)
        receipt = {"root": "/raw", "counts": {"COVID": 3}}
        (folder / data_set / "source.json").write_text(json.dumps(receipt))
        (folder / data_set / "manifest.tsv").write_text("path\tlabel\nCOVID/a.png\t1\n")
        (folder / data_set / "rejects.tsv").write_text("path\treason\n")
        images = rng.integers(0, 255, (3, 32, 32), dtype=np.uint8)
        np.savez(folder / data_set / "images_32px_none_raw.npz", x=images)
        names += [f"{data_set}/{name}" for name in FILES]
    return {
        "made": "today",
        "data": "/raw",
        "configfile": "config/demo.yaml",
        "counts": {"COVID": 3},
        "commit": "0" * 40,
        "files": {name: gpu_bundle.sha256_of(folder / name) for name in names},
    }


FILES = ("source.json", "manifest.tsv", "rejects.tsv", "images_32px_none_raw.npz")


def test_the_cache_arrives_in_parts_over_several_calls_and_unpacks_up_to_date(tmp_path: Path):
    made = tmp_path / "made" / "results" / "data"
    record = fake_data_steps(made)
    payload_dir = tmp_path / "payload"
    payload_dir.mkdir()
    gpu_bundle.pack_cache(made, record, payload_dir / "cache.tar.xz")
    payload = tmp_path / "payload.tar"
    with tarfile.open(payload, "w") as tar:
        tar.add(payload_dir, arcname=".")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    parts = gpu_bundle.split_into_parts(payload, bundle, part_bytes=4096)
    assert len(parts) >= 2
    (bundle / gpu_bundle.MANIFEST).write_text(json.dumps({"cache": record, "parts": parts}))

    # The first call carries the manifest and the first part only.
    device = tmp_path / "device"
    first = device / "benchmarks" / "gpu_bundle"
    first.mkdir(parents=True)
    (first / gpu_bundle.MANIFEST).write_bytes((bundle / gpu_bundle.MANIFEST).read_bytes())
    (first / parts[0]["name"]).write_bytes((bundle / parts[0]["name"]).read_bytes())
    results = device / "results"
    with pytest.raises(gpu_bundle.BundleError, match=parts[-1]["name"]):
        gpu_bundle.unpack(first, results)
    # The next call carries the rest; what the first brought was kept under results/.
    (first / parts[0]["name"]).unlink()
    for part in parts[1:]:
        (first / part["name"]).write_bytes((bundle / part["name"]).read_bytes())
    assert gpu_bundle.unpack(first, results) == record

    data = results / "data"
    for name in record["files"]:
        assert (data / name).read_bytes() == (made / name).read_bytes()
    for data_set in ("dataset", "scanner_b"):
        times = {name: (data / data_set / name).stat().st_mtime for name in FILES}
        assert times["source.json"] < times["manifest.tsv"] < times["images_32px_none_raw.npz"]
        assert times["manifest.tsv"] == times["rejects.tsv"]
    assert "no raw image is read here" in gpu_bundle.describe(results, "origin")
    assert gpu_bundle.describe(results, "dataset") == "dataset={source: local, path: /raw}"


def test_a_damaged_part_is_refused_and_named(tmp_path: Path):
    payload = tmp_path / "payload.tar"
    payload.write_bytes(os.urandom(10000))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    parts = gpu_bundle.split_into_parts(payload, bundle, part_bytes=4096)
    (bundle / gpu_bundle.MANIFEST).write_text(json.dumps({"parts": parts}))
    (bundle / parts[1]["name"]).write_bytes(b"truncated")
    with pytest.raises(gpu_bundle.BundleError, match=f"{parts[1]['name']} does not match"):
        gpu_bundle.unpack(bundle, tmp_path / "results")


@pytest.mark.parametrize("name", ["partition.tsv", "dataset/partition.json", "dataset/x/a.npz"])
def test_a_cache_file_that_is_no_data_step_output_is_refused(tmp_path: Path, name: str):
    made = tmp_path / "made"
    record = fake_data_steps(made)
    (made / name).parent.mkdir(parents=True, exist_ok=True)
    (made / name).write_text("path\tfold\n")
    record["files"][name] = gpu_bundle.sha256_of(made / name)
    gpu_bundle.pack_cache(made, record, tmp_path / "cache.tar.xz")
    with pytest.raises(gpu_bundle.BundleError, match=name):
        gpu_bundle.unpack_cache(tmp_path / "cache.tar.xz", tmp_path / "results")


def test_the_wheelhouse_leaves_torch_to_the_device():
    requirements = gpu_bundle.runtime_requirements()
    assert "snakemake>=8.20" in requirements
    assert not [r for r in requirements if r.startswith("torch")]


def planned_resources(dry_run: str) -> dict[str, set[str]]:
    """Rule -> the resources its planned jobs declare, from a dry run's job listing."""
    found, rule = {}, None
    for line in dry_run.splitlines():
        match = re.match(r"(?:local)?rule (\w+):", line)
        if match:
            rule = match.group(1)
        elif rule and line.strip().startswith("resources:"):
            found.setdefault(rule, set()).update(line.split(":", 1)[1].replace(" ", "").split(","))
    return found


# The final recipe pretrains; one variant shares its pretraining (it changes no model or
# pretraining setting), the other changes the model and so pretrains on its own.
STAGED = {
    "final": {"overrides": {"epochs": 2, "pretrain_epochs": 1}, "threads": 1, "mem_mb": 500},
    "ablation": {
        "variants": {"no_augmentation": {"augment": False}, "stochastic_depth": {"drop_path": 0.1}}
    },
}


@pytest.mark.slow
def test_training_jobs_take_one_gpu_slot_each_and_nothing_else_does(tmp_path: Path):
    proc = snakemake(
        tmp_path, "--dry-run", "--resources", "gpu_slots=2", config=tiny_config(**STAGED)
    )
    resources = planned_resources(proc.stdout)
    training = {"train", "pretrain"}
    assert training <= set(resources)
    for rule, declared in resources.items():
        assert ("gpu_slots=1" in declared) == (rule in training), rule


def test_the_main_stage_is_every_run_but_the_variants_and_no_summary(tmp_path: Path):
    config = tiny_config(**STAGED, evaluation={"folds": 2, "seeds": [0, 1]})
    targets = pipeline_stages.stage_targets("main", write_config(tmp_path, config))
    assert targets[:3] == ["ship_model", "baselines", "attention_maps"]
    runs = [t.removeprefix("results/runs/").split("/") for t in targets[3:]]
    grid = {recipe for recipe, *_ in runs} - {"final"}
    assert len(grid) == 4 and all("patch_size~" in r and "heads~" in r for r in grid)
    assert not {recipe for recipe, *_ in runs} & set(STAGED["ablation"]["variants"])
    assert {name for recipe, *_, name in runs if recipe in grid} == {"train_metrics.json"}
    assert sorted((fold, seed) for recipe, fold, seed, _ in runs if recipe in grid) == sorted(
        4 * [("fold0", "seed0"), ("fold1", "seed0")]  # nested: the grid in each fold
    )
    final = sorted((fold, seed, name) for recipe, fold, seed, name in runs if recipe == "final")
    folds = [(f, s, "predictions.tsv") for f in ("fold0", "fold1") for s in ("seed0", "seed1")]
    assert final == [("all", "seed0", "predictions.tsv"), *folds]
    assert pipeline_stages.stage_targets("ablation", tmp_path / "config.yaml") == ["all"]


@pytest.mark.slow
def test_main_then_ablation_leaves_the_variants_and_the_summaries_to_the_second(tmp_path: Path):
    """The stages as gpu_pipeline.sh runs them, and the figures it gathers after each."""
    config = tiny_config(**STAGED)
    targets = pipeline_stages.stage_targets("main", write_config(tmp_path, config))
    snakemake(tmp_path, *targets)
    # What is left is the ablation: the variants' runs (one shares the final recipe's
    # pretraining, the other pretrains), then the summaries and the report.
    left = jobs_to_run(tmp_path)
    assert left == {"pretrain": 1, "train": 2, "score": 2, "summarise": 1, "report": 1, "all": 1}
    main = pipeline_figures.summarise(tmp_path / "results", tmp_path / "main", None)
    stages = set(main["stages_window_s"])
    assert {"data", "sweep", "final", "pretrain", "score", "baselines", "attention_maps"} <= stages
    assert not stages & {"variants", "summaries"}
    assert main["sweep"]["jobs"] == 4 and main["sweep"]["training_images"] > 0
    assert main["sweep"]["gpu"].startswith("no GPU samples")
    assert main["final"]["shipped_run"] == "runs/final/all/seed0"
    assert main["final"]["locked_test"]["n"] > 0
    assert main["headline"] is None and main["ablation"] is None

    snakemake(tmp_path, "all")
    assert jobs_to_run(tmp_path) == {}
    after = pipeline_figures.summarise(tmp_path / "results", tmp_path / "ablation", None)
    assert {"variants", "summaries"} <= set(after["stages_window_s"])
    headline = json.loads((tmp_path / "results/summary/headline.json").read_text())
    shipped = after["headline"]["shipped_test"]
    assert shipped["accuracy"] == headline["shipped"]["test"]["accuracy"]
    assert shipped["accuracy"] == pytest.approx(main["final"]["locked_test"]["accuracy"])
    assert {row["variant"] for row in after["ablation"]} == {
        "final",
        *STAGED["ablation"]["variants"],
    }
    stages = pd.read_csv(tmp_path / "ablation" / "stage_times.tsv", sep="\t")
    variants = stages[stages.stage == "variants"].job
    assert sorted(variants) == [
        "train/no_augmentation/all/seed0.tsv",
        "train/stochastic_depth/all/seed0.tsv",
    ]


@pytest.mark.parametrize(
    ("job", "stage"),
    [
        ("fetch_data/dataset.tsv", "data"),
        ("build_manifest/scanner_b.tsv", "data"),
        ("preprocess/dataset_64px_lungs_standardise.tsv", "data"),
        ("partition.tsv", "data"),
        ("train/patch_size~8_heads~1_dropout~0.1/fold3/seed0.tsv", "sweep"),
        ("train/final/all/seed0.tsv", "final"),
        ("train/final/fold0/seed1.tsv", "final"),
        ("train/no_pretraining/all/seed0.tsv", "variants"),
        ("pretrain/final/all/seed0.tsv", "pretrain"),
        ("score/depth_6/all/seed0.tsv", "score"),
        ("baselines.tsv", "baselines"),
        ("summarise.tsv", "summaries"),
        ("report.tsv", "summaries"),
        ("attention_maps.tsv", "attention_maps"),
        ("ship_model.tsv", "ship_model"),
        ("predict/scans.tsv", "predict"),
    ],
)
def test_each_benchmark_file_belongs_to_its_stage(job: str, stage: str):
    assert pipeline_figures.stage_of(job) == stage


def test_profile_gpu_sets_the_slots_and_the_script_overrides_them():
    profile = (REPO / "profiles" / "gpu" / "config.yaml").read_text()
    assert re.search(r"^resources:\n  gpu_slots: \d+$", profile, re.M)
    script = (REPO / "benchmarks" / "gpu_pipeline.sh").read_text()
    assert "--profile profiles/gpu" in script and '--resources gpu_slots="$slots"' in script
    assert "benchmarks/pipeline_stages.py" in script  # the stages' targets
    # before every option: --config and --resources would take them as more of their values
    assert '-m snakemake "${targets[@]}" --profile' in script


def test_auto_follows_a_measured_gpu_and_the_user_overrides_it():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    measured = {accelerator.gpu_name(cuda): {"compile": False, "bf16": True}}
    assert not accelerator.use("auto", "compile", cuda, measured)
    assert accelerator.use("auto", "bf16", cuda, measured)
    assert accelerator.use("always", "compile", cuda, measured)
    assert accelerator.use("auto", "compile", cuda, {})  # unmeasured GPU: on
    assert not accelerator.use("auto", "bf16", cpu, measured)
    with pytest.raises(ValueError, match="training.bf16"):
        accelerator.use("sometimes", "bf16", cuda)


def test_auto_settings_decide_from_the_measured_seconds(tmp_path: Path):
    seconds = {"fp32_eager": (30, 5), "bf16_eager": (20, 6), "bf16_compiled": (25, 7)}
    for run, (patch8, patch32) in seconds.items():
        for patch, s in ((8, patch8), (32, patch32)):
            figures = {"gpu": "Some GPU", "patch": patch, "seconds": s}
            (tmp_path / f"grid_job_{run}_patch{patch}.json").write_text(json.dumps(figures))
    entry = auto_settings.decide(tmp_path)["Some GPU"]
    assert entry["bf16"] is True  # 26 s against 35 s
    assert entry["compile"] is False  # 32 s with compilation against 26 s


def test_the_figures_line_of_a_training_run_is_what_the_collector_reads(tmp_path: Path, caplog):
    with caplog.at_level(logging.INFO):
        log_device_figures([12.5, 2.0, 2.25, 2.5], torch.device("cpu"))
    folder = tmp_path / "runs" / "patch_size~8_heads~1" / "fold0" / "seed0"
    folder.mkdir(parents=True)
    (folder / "train.log").write_text(caplog.text)
    (tmp_path / "partition.log").write_text("no figures here\n")
    table = pipeline_figures.training_jobs(tmp_path)
    assert table.to_dict(orient="records") == [
        {
            "log": "runs/patch_size~8_heads~1/fold0/seed0/train.log",
            "stage": "sweep",
            "first_epoch_s": 12.5,
            "later_epochs_median_s": 2.25,
            "first_minus_later_s": 10.25,
            "peak_gpu_mib": 0,
        }
    ]
