"""External evaluation (evaluation.external) on the demo's second scanner, with no real data:
one tiny end-to-end run holding a good set (one corrupt file in it) and a set with an empty
class folder; a missing folder stops the run before any job."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import jobs_to_run, only, real_data_root, snakemake, tiny_config, write_config
from PIL import Image

from vitct.artifact import read_metadata
from vitct.manifest import build_manifest
from vitct.predict import load_model
from vitct.synthetic import generate


def test_scanner_b_renders_the_same_slices_otherwise(tmp_path):
    generate(tmp_path / "a", 3, seed=5, progress=False)
    generate(tmp_path / "b", 3, seed=5, progress=False, scanner="b")
    for name in ("Covid (1).png", "Covid (2).png"):
        a = Image.open(tmp_path / "a" / "COVID" / name).convert("L")
        b = Image.open(tmp_path / "b" / "COVID" / name).convert("L")
        assert b.width < 0.7 * a.width and b.height < 0.7 * a.height  # lower resolution, crop
        corner_a, corner_b = np.asarray(a)[:3, :3].mean(), np.asarray(b)[:3, :3].mean()
        assert corner_a < 40 < 150 < corner_b  # dark background against a bright one


def test_unknown_scanner_is_refused(tmp_path):
    with pytest.raises(ValueError, match="scanner must be one of"):
        generate(tmp_path, 1, seed=0, progress=False, scanner="c")


def test_missing_external_folder_stops_before_any_job(tmp_path):
    missing = tmp_path / "nowhere"
    config = tiny_config(evaluation={"external": {"elsewhere": str(missing)}})
    proc = snakemake(tmp_path / "run", "-n", config=config, check=False)
    assert proc.returncode != 0
    assert "evaluation.external.elsewhere" in proc.stdout + proc.stderr
    assert str(missing) in proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "results").exists()


@pytest.fixture(scope="module")
def external_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("external")
    good, empty = root / "scanner_b", root / "empty_class"
    generate(good, 10, seed=11, progress=False, scanner="b")
    (good / "non-COVID" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    generate(empty, 4, seed=12, progress=False, scanner="b")
    shutil.rmtree(empty / "non-COVID")
    (empty / "non-COVID").mkdir()
    config = tiny_config(
        evaluation={"external": {"scanner_b": str(good), "empty_class": str(empty)}},
        ablation={"variants": {"no_augmentation": {"augment": False}}},
    )
    workdir = root / "run"
    proc = snakemake(workdir, "--keep-going", config=config, check=False)
    return workdir, good, proc


def test_external_set_is_scored_beside_the_in_source_test(external_run):
    workdir, good, proc = external_run
    results = workdir / "results"
    assert (results / "final" / "metrics.json").is_file(), proc.stdout[-3000:]
    metrics = json.loads((results / "external" / "scanner_b" / "metrics.json").read_text())
    assert metrics["n"] == 20 and metrics["rejected_files"] == 1
    assert set(metrics["ci95"]) == {"accuracy", "mcc", "roc_auc"}
    assert set(metrics["baselines"]) == {"nearest_neighbour", "grey_histogram"}
    assert (results / "external" / "scanner_b" / "reliability.png").stat().st_size > 0
    variants = pd.read_csv(results / "external" / "scanner_b" / "variants.tsv", sep="\t")
    assert variants.model.tolist() == ["final", "no_augmentation"]
    assert variants.accuracy.iloc[0] == pytest.approx(metrics["accuracy"], abs=1e-4)


def test_corrupt_external_file_is_a_rejects_row(external_run):
    workdir, _, _ = external_run
    rejects = pd.read_csv(workdir / "results" / "external" / "scanner_b" / "rejects.tsv", sep="\t")
    assert rejects.path.tolist() == ["non-COVID/broken.png"]
    assert rejects.reason.iloc[0]


def test_external_predictions_equal_vitct_predict(external_run):
    workdir, good, _ = external_run
    results = workdir / "results"
    table = pd.read_csv(results / "external" / "scanner_b" / "predictions.csv")
    with pytest.warns(UserWarning, match="synthetic demo data"):
        predictor = load_model(results / "final" / "model.safetensors")
    predicted = predictor.predict([good / p for p in table.path])
    assert (predicted.error == "").all()
    np.testing.assert_allclose(predicted.prob_covid.round(6), table.prob_covid, atol=1e-6)
    assert predicted.predicted.tolist() == table.predicted.tolist()
    np.testing.assert_allclose(predicted.ood_score.round(4), table.ood_score, atol=1e-4)
    assert predicted.unfamiliar.tolist() == table.unfamiliar.tolist()


def test_the_other_scanner_is_flagged_far_more_often_than_the_in_source_test(external_run):
    workdir, _, _ = external_run
    results = workdir / "results"
    in_source = json.loads((results / "final" / "metrics.json").read_text())["flagged_share"]
    external = json.loads((results / "external" / "scanner_b" / "metrics.json").read_text())
    # The tiny demo's threshold comes from 12 validation images, so its in-source share is noisy
    # (5 of 12 test images here); the other scanner's bright background is flagged throughout.
    assert external["flagged_share"] > 0.8 and external["flagged_share"] > in_source + 0.25
    test = pd.read_csv(results / "final" / "predictions.csv")
    assert test.unfamiliar.mean() == pytest.approx(in_source)
    for model in ("final", "ablation/no_augmentation"):  # every model carries its reference
        reference = read_metadata(results / model / "model.safetensors")["familiarity"]
        assert reference["train_images"] == 24 and 0 <= reference["val_flagged_share"] < 0.2


def test_empty_external_class_folder_names_it_and_keeps_the_rest(external_run):
    workdir, _, proc = external_run
    assert proc.returncode != 0  # the report waits for every external set
    log = (workdir / "results" / "logs" / "external" / "manifest_empty_class.log").read_text()
    assert "non-COVID" in log and "is empty" in log and "evaluation.external.empty_class" in log
    assert (workdir / "results" / "external" / "scanner_b" / "metrics.json").is_file()
    assert (workdir / "results" / "final" / "predictions.csv").is_file()


@pytest.mark.real_data
def test_real_external_set_reads_through_the_manifest():
    root = real_data_root() / "external-ucsd-dev"
    manifest, rejects = build_manifest(root, progress=False)
    counts = manifest.class_dir.value_counts().to_dict()
    assert counts.get("COVID", 0) + len(rejects[rejects.class_dir == "COVID"]) == 163
    assert counts.get("non-COVID", 0) + len(rejects[rejects.class_dir == "non-COVID"]) == 208


def test_report_shows_the_external_set_beside_the_in_source_test(external_run):
    workdir, good, _ = external_run
    config = tiny_config(
        evaluation={"external": {"scanner_b": str(good)}},
        ablation={"variants": {"no_augmentation": {"augment": False}}},
    )
    snakemake(workdir, config=config)  # without the broken set, only the report is left
    summary = (workdir / "results" / "summary.md").read_text()
    assert "ViT, final model, on external set scanner_b (n = 20)" in summary
    assert "grey-level histograms, on external set scanner_b" in summary
    assert "flagged unfamiliar" in summary.splitlines()[2]
    assert "| external set scanner_b (n = 20) |" in summary  # the shortcut meter's row
    meter = json.loads(only(workdir.glob("results/baseline/shortcut_meter_*.json")).read_text())
    assert list(meter["external"]) == ["scanner_b"] and meter["external"]["scanner_b"]["n"] == 20
    html = (workdir / "results" / "report.html").read_text()
    assert "reliability diagram on scanner_b" in html
    assert "as unfamiliar" in html


def test_demo_source_can_be_the_second_scanner(tmp_path):
    demo = {"n_per_class": 4, "seed": 3, "scanner": "b"}
    config = tiny_config(dataset={"source": "demo", "demo": demo})
    snakemake(tmp_path, "results/data/source.json", config=config)
    receipt = json.loads((tmp_path / "results" / "data" / "source.json").read_text())
    assert receipt["counts"] == {"COVID": 4, "non-COVID": 4} and not receipt["real_data"]
    first = Image.open(tmp_path / receipt["root"] / "COVID" / "Covid (1).png").convert("L")
    assert np.asarray(first)[:3, :3].mean() > 150  # scanner b's bright background


def test_adding_an_external_set_runs_only_its_steps_and_the_report(external_run):
    workdir, good, _ = external_run
    config = tiny_config(
        evaluation={"external": {"scanner_b": str(good), "again": str(good)}},
        ablation={"variants": {"no_augmentation": {"augment": False}}},
    )
    write_config(workdir, config)
    jobs = jobs_to_run(workdir)
    assert set(jobs) == {
        "all",
        "fetch_external",
        "external_manifest",
        "external_preprocess",
        "external_grey_histograms",
        "evaluate_external",
        "shortcut_meter",
        "report",
    }, jobs
    assert jobs["evaluate_external"] == 1
