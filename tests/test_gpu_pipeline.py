"""The fast parts of benchmarks/gpu_pipeline.sh: the data cache's trip in parts, the GPU slots
the training rules declare, what `auto` does with a measured GPU, and the log line the figures
are read from. (The script itself is run on the CPU path by hand: benchmarks/README.md.)"""

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
import pytest
import torch
from conftest import REPO, snakemake, tiny_config

from vitct import accelerator
from vitct.train import log_device_figures


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gpu_bundle = load_benchmark("gpu_bundle")
pipeline_figures = load_benchmark("pipeline_figures")
auto_settings = load_benchmark("auto_settings")


def fake_data_steps(folder: Path) -> dict:
    """Files as the pipeline's data steps write them, and the record `make` keeps of them."""
    folder.mkdir(parents=True)
    (folder / "source.json").write_text(json.dumps({"root": "/raw", "counts": {"COVID": 3}}))
    (folder / "manifest.tsv").write_text("path\tlabel\nCOVID/a.png\t1\n")
    (folder / "rejects.tsv").write_text("path\treason\n")
    rng = np.random.default_rng(0)
    np.savez(
        folder / "images_32px_none_raw.npz", x=rng.integers(0, 255, (3, 32, 32), dtype=np.uint8)
    )
    np.savez(folder / "grey_histograms.npz", h=rng.random((3, 32)))
    names = ["source.json", "manifest.tsv", "rejects.tsv", "images_32px_none_raw.npz"]
    names.append("grey_histograms.npz")
    return {
        "made": "today",
        "data": "/raw",
        "configfile": "config/demo.yaml",
        "counts": {"COVID": 3},
        "commit": "0" * 40,
        "files": {name: gpu_bundle.sha256_of(folder / name) for name in names},
    }


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
    times = {name: (data / name).stat().st_mtime for name in record["files"]}
    assert times["source.json"] < times["manifest.tsv"] < times["images_32px_none_raw.npz"]
    assert times["manifest.tsv"] == times["rejects.tsv"]
    assert times["images_32px_none_raw.npz"] == times["grey_histograms.npz"]
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


def test_a_cache_file_that_is_no_data_step_output_is_refused(tmp_path: Path):
    made = tmp_path / "made"
    record = fake_data_steps(made)
    (made / "split.tsv").write_text("path\tsplit\n")
    record["files"]["split.tsv"] = gpu_bundle.sha256_of(made / "split.tsv")
    gpu_bundle.pack_cache(made, record, tmp_path / "cache.tar.xz")
    with pytest.raises(gpu_bundle.BundleError, match="split.tsv"):
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


def test_training_jobs_take_one_gpu_slot_each_and_nothing_else_does(tmp_path: Path):
    config = tiny_config(
        final={"overrides": {"epochs": 2, "pretrain_epochs": 1}, "threads": 1, "mem_mb": 500},
        ablation={"variants": {"stochastic_depth": {"drop_path": 0.1}}},
    )
    proc = snakemake(tmp_path, "--dry-run", "--resources", "gpu_slots=2", config=config)
    resources = planned_resources(proc.stdout)
    training = {"train_sweep", "pretrain_final", "train_final", "pretrain_ablation"}
    training.add("train_ablation")
    assert training <= set(resources)
    for rule, declared in resources.items():
        assert ("gpu_slots=1" in declared) == (rule in training), rule


def test_profile_gpu_sets_the_slots_and_the_script_overrides_them():
    profile = (REPO / "profiles" / "gpu" / "config.yaml").read_text()
    assert re.search(r"^resources:\n  gpu_slots: \d+$", profile, re.M)
    script = (REPO / "benchmarks" / "gpu_pipeline.sh").read_text()
    assert "--profile profiles/gpu" in script and '--resources gpu_slots="$slots"' in script


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
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "job.log").write_text(caplog.text)
    table = pipeline_figures.training_jobs(tmp_path)
    assert table.to_dict(orient="records") == [
        {
            "log": "sweep/job.log",
            "first_epoch_s": 12.5,
            "later_epochs_median_s": 2.25,
            "first_minus_later_s": 10.25,
            "peak_gpu_mib": 0,
        }
    ]
