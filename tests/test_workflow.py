"""The whole pipeline on the tiny demo config: one kind of run, its outputs, the report, rerun
only what changed, and the predict rule and command against the pipeline's own scoring."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    REPO,
    demo_run_config,
    jobs_to_run,
    snakemake,
    tiny_config,
    vitct,
    write_config,
)

from vitct.data.partition import run_parts
from vitct.evaluation.metrics import binary_metrics, brier_score, expected_calibration_error
from vitct.evaluation.scoring import read_predictions
from vitct.evaluation.selection import choose_recipe
from vitct.model.artifact import read_metadata
from vitct.prediction.predictor import COLUMNS, DemoModelWarning, load_model

pytestmark = pytest.mark.slow

CV_RUNS = [(fold, seed) for fold in ("fold0", "fold1") for seed in (0, 1)]


def grid_names(root: Path) -> list[str]:
    """The grid runs' recipe names (their settings in the config's grid order)."""
    return sorted(p.name for p in (root / "results/runs").glob("*~*"))


def run_dir(root: Path, recipe: str, fold: str, seed: int = 0) -> Path:
    return root / "results/runs" / recipe / fold / f"seed{seed}"


def metrics_of(root: Path, recipe: str, fold: str, seed: int = 0) -> dict:
    return json.loads((run_dir(root, recipe, fold, seed) / "train_metrics.json").read_text())


def test_every_contracted_output_exists(demo_run: Path):
    results = demo_run / "results"
    names = [
        "report.html",
        "summary.md",
        "model.safetensors",
        "data/partition.tsv",
        "data/partition.json",
        "data/dataset/manifest.tsv",
        "data/scanner_b/rejects.tsv",
        "attention/rollout.png",
        "attention/patch_grid.png",
        "attention/heads_1.png",
        *(f"baselines/{fold}/predictions.tsv" for fold in ("all", "fold0", "fold1")),
        *(
            f"summary/{name}"
            for name in ("headline.json", "runs.tsv", "folds.tsv", "sweep.tsv", "ablation.tsv")
        ),
        *(
            f"summary/{name}.png"
            for name in ("sweep", "confusion", "roc", "reliability", "cv_runs", "ablation")
        ),
    ]
    for recipe, fold, seed in [("final", "all", 0), *(("final", f, s) for f, s in CV_RUNS)]:
        folder = f"runs/{recipe}/{fold}/seed{seed}"
        for name in ("model.safetensors", "train_metrics.json", "history.tsv", "curves.png"):
            names.append(f"{folder}/{name}")
        names.append(f"{folder}/predictions.tsv")
    for name in names:
        assert (results / name).stat().st_size > 0, name
    leftovers = list(results.rglob("resume.pt")) + list(results.rglob("pretrain_resume.pt"))
    assert leftovers == []  # checkpoints are removed once a run is done
    assert not list(results.rglob("model_config.json"))  # nothing reads it: not written


def test_the_grid_trains_in_each_fold_and_each_fold_takes_its_own_choice(demo_run: Path):
    sweep = pd.read_csv(demo_run / "results/summary/sweep.tsv", sep="\t")
    assert len(sweep) == 4 and set(sweep.folds) == {2}  # 2 x 2 combinations, in both folds
    grid = grid_names(demo_run)
    assert len(grid) == 4
    for fold in ("fold0", "fold1"):
        choice = [run_dir(demo_run, name, fold) / "train_metrics.json" for name in grid]
        expected = choose_recipe(choice, ["patch_size", "heads"], "mcc")
        for seed in (0, 1):
            assert metrics_of(demo_run, "final", fold, seed)["chosen"] == expected
    every = [
        run_dir(demo_run, n, f) / "train_metrics.json" for f in ("fold0", "fold1") for n in grid
    ]
    shipped = metrics_of(demo_run, "final", "all")
    assert shipped["chosen"] == choose_recipe(every, ["patch_size", "heads"], "mcc")
    assert shipped["chosen"]["chosen_on"] == ["fold0", "fold1"]
    assert not (demo_run / "results/runs" / grid[0] / "all").exists()  # nested: no grid on all


def test_every_run_trains_on_its_own_images_and_is_scored_on_the_others(demo_run: Path):
    table = pd.read_csv(demo_run / "results/data/partition.tsv", sep="\t", keep_default_na=False)
    config = demo_run_config()
    for fold, seed in [("all", 0), *CV_RUNS]:
        parts = run_parts(table, fold, config["split"]["val"], config["split"]["seed"])
        metrics = metrics_of(demo_run, "final", fold, seed)
        assert metrics["images"] == {
            "train": int((parts == "train").sum()),
            "val": int((parts == "val").sum()),
        }
        scored = read_predictions(run_dir(demo_run, "final", fold, seed) / "predictions.tsv")
        for part in ("held_out", "test"):
            assert set(scored.path[scored.part == part]) == set(table.path[parts == part])
        assert (scored.part == "external:scanner_b").sum() == 48
        seen = set(table.path[parts.isin(["train", "val"])])
        in_source = scored.path[scored.part.isin(["held_out", "test"])]
        assert seen.isdisjoint(in_source)  # nothing a run saw is scored
    # the folds: groups never straddle, the locked test is grouped too
    pool = table[~table.test]
    assert (pool.groupby("near_duplicate_group").fold.nunique() == 1).all()
    assert (table.groupby("near_duplicate_group").test.nunique() == 1).all()


def test_the_headline_is_computed_from_the_runs_predictions(demo_run: Path):
    results = demo_run / "results"
    headline = json.loads((results / "summary/headline.json").read_text())
    runs = pd.read_csv(results / "summary/runs.tsv", sep="\t")
    held = runs[(runs.recipe == "final") & (runs.part == "held_out")]
    assert len(held) == 4
    assert headline["cv"]["accuracy"] == pytest.approx(held.accuracy.mean())
    low, high = headline["cv"]["ci95"]["accuracy"]
    assert low <= headline["cv"]["accuracy"] <= high
    assert headline["cv"]["seeds"] == [0, 1] and headline["cv"]["folds"] == 2
    shipped = read_predictions(run_dir(demo_run, "final", "all") / "predictions.tsv")
    test = shipped[shipped.part == "test"]
    assert headline["shipped"]["test"]["accuracy"] == pytest.approx(
        binary_metrics(test.label, test.prob_covid)["accuracy"]
    )
    assert {"pixels_1nn", "grey_histogram", "shortcut_meter"} == headline["baselines"].keys()
    # calibration: before (prob_raw) and after the shipped model's temperature, from its file
    calibrated = headline["calibration"]
    assert set(calibrated) == {"held_out", "test", "external:scanner_b"}
    assert calibrated["test"]["ece"] == pytest.approx(
        expected_calibration_error(test.label, test.prob_covid)
    )
    assert calibrated["test"]["brier_raw"] == pytest.approx(brier_score(test.label, test.prob_raw))
    temperature = read_metadata(results / "model.safetensors")["calibration"]["temperature"]
    assert calibrated["test"]["temperature"] == temperature > 0
    assert ((test.prob_raw >= 0.5) == (test.prob_covid >= 0.5)).all()
    assert calibrated["held_out"]["runs"] == 4
    assert headline["protocol"]["optimistic"] == []  # nested grid, grouped locked test
    json.dumps(headline, allow_nan=False)  # null, never NaN, where a number is missing


def test_the_ablation_pairs_each_variant_with_the_shipped_model(demo_run: Path):
    results = demo_run / "results"
    table = pd.read_csv(results / "summary/ablation.tsv", sep="\t", keep_default_na=False)
    assert list(table.variant) == ["final", "no_augmentation"] * 2  # locked test, scanner_b
    assert list(table.scored_on) == ["locked test"] * 2 + ["external set scanner_b"] * 2
    final, variant = table.iloc[0], table.iloc[1]
    assert variant.changes == "augment=False"
    assert float(variant.accuracy_points) == pytest.approx(
        100 * (float(final.accuracy) - float(variant.accuracy)), abs=1e-3
    )
    trained = metrics_of(demo_run, "no_augmentation", "all")
    assert trained["training"]["augment"] is False
    shipped = metrics_of(demo_run, "final", "all")
    assert trained["model"] == shipped["model"] and trained["chosen"] == shipped["chosen"]
    # Augmentation does not shape pretraining: the variant starts from the final recipe's.
    assert (run_dir(demo_run, "final", "all") / "pretrained.pt").exists()
    assert not (run_dir(demo_run, "no_augmentation", "all") / "pretrained.pt").exists()
    log = (results / "logs/runs/no_augmentation/all/seed0/train.log").read_text()
    assert "starting from the given pretraining (1 epochs)" in log
    assert "pretrain epoch" not in log


def test_the_report_leads_with_cross_validation_and_says_which_data_chose_what(demo_run: Path):
    html = (demo_run / "results/report.html").read_text()
    assert "DEMO" in html and "NOT real CT scans" in html and "config/real-cpu.yaml" in html
    assert html.count("data:image/png;base64,") >= 9  # self-contained: no external images
    order = [
        "How good is it, on what, compared with what",
        "Cross-validation mean: accuracy",
        "Which data chose what",
        "<h2>Cross-validation</h2>",
        "The shipped model",
        "<h2>Calibration",
        "Ablation: what each ingredient buys",
        "Memorisation",
        "<h2>Sweep</h2>",
        "Reproducibility",
    ]
    positions = [html.index(text) for text in order]
    assert positions == sorted(positions)
    tables = html[: html.index("<h2>Reproducibility</h2>")]
    assert "nan" not in tables.replace("nan-", "").lower().split("base64")[0]
    summary = (demo_run / "results/summary.md").read_text().splitlines()
    assert "synthetic demo slices, NOT real CT data" in summary[0]
    first = summary[4].split(" | ")
    assert first[0].startswith("| ViT, final recipe: cross-validation mean")
    assert first[2] in html  # the cross-validation accuracy with its interval
    assert summary[5].startswith("| ViT, shipped model | locked test")
    assert any(line.startswith("Calibration (temperature scaling, T = ") for line in summary)
    assert "ECE before" in html and "after temperature scaling" in html
    assert "nan" not in "\n".join(summary).lower()


def test_training_logs_show_epoch_loss_metric_and_time_left(demo_run: Path):
    log = (demo_run / "results/logs/runs/final/all/seed0/train.log").read_text()
    assert "epoch 2/2 loss" in log and "val_mcc" in log and "left]" in log
    pretrain = (demo_run / "results/logs/runs/final/all/seed0/pretrain.log").read_text()
    assert "pretrain epoch 1/1 reconstruction loss" in pretrain


def test_each_grid_run_declares_and_honours_its_threads(demo_run: Path):
    bench = sorted((demo_run / "results/benchmarks/train").glob("*~*/*/seed0.tsv"))
    assert len(bench) == 8  # 4 combinations x 2 folds
    for path in bench:
        row = pd.read_csv(path, sep="\t").iloc[0]
        # One thread: CPU time cannot exceed wall time by much (process start-up aside).
        assert row["cpu_time"] <= row["s"] * 1.3 + 1.0, path


def test_a_finished_run_has_nothing_left_to_do(demo_run: Path):
    assert jobs_to_run(demo_run) == {}


def test_adding_a_seed_trains_only_its_runs(demo_run: Path):
    config = demo_run_config()
    try:
        evaluation = {**config["evaluation"], "seeds": [0, 1, 2]}
        write_config(demo_run, {**config, "evaluation": evaluation})
        assert jobs_to_run(demo_run) == {
            "pretrain": 2,
            "train": 2,
            "score": 2,
            "summarise": 1,
            "report": 1,
            "all": 1,
        }
    finally:
        write_config(demo_run, config)


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    """A copy of the project with a finished tiny run, so its code can be edited safely."""
    root = tmp_path_factory.mktemp("project")
    for name in ("Snakefile", "workflow", "src", "config", "envs"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, root / name)
    snakemake(root, config=tiny_config(), snakefile=root / "Snakefile")
    return root


def planned(root: Path) -> dict[str, int]:
    return jobs_to_run(root, snakefile=root / "Snakefile")


# What reruns after the shipped model's training (tiny_config: no folds, no variants).
DOWNSTREAM_OF_FINAL = {
    "train": 1,
    "score": 1,
    "summarise": 1,
    "attention_maps": 1,
    "report": 1,
    "ship_model": 1,
    "all": 1,
}


def test_changing_final_epochs_reruns_only_final_runs(project_copy: Path):
    write_config(project_copy, tiny_config(final={"overrides": {"epochs": 3}}))
    try:
        assert planned(project_copy) == DOWNSTREAM_OF_FINAL
    finally:
        write_config(project_copy, tiny_config())


def test_adding_a_grid_value_trains_only_the_new_combinations(project_copy: Path):
    config = tiny_config()
    config["sweep"]["grid"]["heads"] = [1, 2, 4]
    write_config(project_copy, config)
    try:
        assert planned(project_copy) == {**DOWNSTREAM_OF_FINAL, "train": 2 + 1}
    finally:
        write_config(project_copy, tiny_config())


def test_adding_an_ablation_variant_trains_only_that_variant(project_copy: Path):
    html = (project_copy / "results/report.html").read_text()
    assert "Ablation" not in html  # no variants configured: no section, no extra training
    write_config(project_copy, tiny_config(ablation={"variants": {"no_clip": {"grad_clip": 0}}}))
    try:
        assert planned(project_copy) == {
            "train": 1,
            "score": 1,
            "summarise": 1,
            "report": 1,
            "all": 1,
        }
    finally:
        write_config(project_copy, tiny_config())


def test_editing_the_model_code_reruns_the_runs_but_no_data_step(project_copy: Path):
    model_py = project_copy / "src/vitct/model/vit.py"
    original = model_py.read_text()
    assert planned(project_copy) == {}
    model_py.write_text(original + "\n# a change to the model code\n")
    try:
        assert planned(project_copy) == {**DOWNSTREAM_OF_FINAL, "train": 4 + 1}
    finally:
        model_py.write_text(original)


def test_editing_the_report_template_reruns_only_the_report(project_copy: Path):
    template = project_copy / "src/vitct/pipeline/templates/report.html"
    original = template.read_text()
    template.write_text(original.replace("<h2>Data</h2>", "<h2>Data, as read</h2>"))
    try:
        assert planned(project_copy) == {"report": 1, "all": 1}
    finally:
        template.write_text(original)


def test_a_larger_final_image_size_preprocesses_once_more_and_keeps_the_grid(
    project_copy: Path,
):
    larger = tiny_config(final={"overrides": {"epochs": 2, "image_size": 64}})
    write_config(project_copy, larger)
    try:
        # the baselines' shortcut meter reads the final recipe's input
        assert planned(project_copy) == {"preprocess": 1, "baselines": 1, **DOWNSTREAM_OF_FINAL}
        snakemake(project_copy, snakefile=project_copy / "Snakefile")
        metrics = metrics_of(project_copy, "final", "all")
        assert metrics["model"]["image_size"] == 64
        assert (project_copy / "results/data/dataset/images_64px_none_raw.npz").exists()
        headline = json.loads((project_copy / "results/summary/headline.json").read_text())
        assert headline["shipped"]["test"]["n"] == 12  # scored on the same test images
        assert planned(project_copy) == {}
    finally:
        write_config(project_copy, tiny_config())
        snakemake(project_copy, snakefile=project_copy / "Snakefile")  # back to 32 px


def test_pretraining_is_shared_by_the_runs_it_fits_and_survives_other_changes(
    project_copy: Path,
):
    pretrained = tiny_config(
        final={"overrides": {"epochs": 2, "pretrain_epochs": 1}},
        ablation={
            "variants": {
                "no_smoothing": {"label_smoothing": 0.0},  # same pretraining as final
                "no_drop_path": {"drop_path": 0.0},  # another model: pretrains for itself
            }
        },
    )
    write_config(project_copy, pretrained)
    try:
        plan = planned(project_copy)
        assert plan["pretrain"] == 2 and plan["train"] == 3  # final and the two variants
        snakemake(project_copy, snakefile=project_copy / "Snakefile")
        assert (run_dir(project_copy, "no_drop_path", "all") / "pretrained.pt").exists()
        assert not (run_dir(project_copy, "no_smoothing", "all") / "pretrained.pt").exists()
        # A setting that pretraining ignores reruns the training, not the pretraining.
        pretrained["final"]["overrides"]["label_smoothing"] = 0.2
        write_config(project_copy, pretrained)
        plan = planned(project_copy)
        assert "pretrain" not in plan and plan["train"] == 3
        # One that shapes it (the share of hidden patches) pretrains again.
        pretrained["final"]["overrides"]["mask_ratio"] = 0.75
        write_config(project_copy, pretrained)
        assert planned(project_copy)["pretrain"] == 2
        # Kept by mtime-only rerun triggers, a pretraining that no longer fits is refused by name.
        proc = snakemake(
            project_copy,
            "--rerun-triggers",
            "mtime",
            "--forcerun",
            "results/runs/final/all/seed0/model.safetensors",
            "results/runs/final/all/seed0/model.safetensors",
            check=False,
            snakefile=project_copy / "Snakefile",
        )
        assert proc.returncode != 0
        assert (
            "PretrainingMismatchError: results/runs/final/all/seed0/pretrained.pt: the "
            "pretrained weights were made with other settings (mask_ratio differ)"
        ) in proc.stderr
    finally:
        write_config(project_copy, tiny_config())
        snakemake(project_copy, snakefile=project_copy / "Snakefile")  # without pretraining


def test_snakemake_report_collects_the_annotated_outputs(demo_run: Path, tmp_path: Path):
    import zipfile

    target = tmp_path / "snakemake-report.zip"
    snakemake(demo_run, "--report", str(target))
    names = zipfile.ZipFile(target).namelist()
    for figure in ("sweep.png", "confusion.png", "roc.png", "rollout.png", "cv_runs.png"):
        assert any(n.endswith(figure) for n in names), figure


def test_a_file_name_with_braces_is_no_wildcard(folder, tmp_path):
    shutil.move(folder / "COVID" / "Covid (2).png", folder / "COVID" / "Covid {2}.png")
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_config(workdir, tiny_config(dataset={"source": "local", "path": str(folder)}))
    assert jobs_to_run(workdir)["fetch_data"] == 1  # the DAG builds: no WildcardError


def test_an_image_replaced_under_an_older_time_reruns_the_data_steps(folder, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_config(workdir, tiny_config(dataset={"source": "local", "path": str(folder)}))
    snakemake(workdir, "results/data/dataset/manifest.tsv")
    assert jobs_to_run(workdir) and "fetch_data" not in jobs_to_run(workdir)
    target, other = sorted((folder / "COVID").glob("*.png"))[:2]
    old = target.stat()
    shutil.copyfile(other, target)  # another image's bytes under the old time, as cp -p does
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert jobs_to_run(workdir)["fetch_data"] == 1  # stale data is never trusted
    snakemake(workdir, "results/data/dataset/manifest.tsv")
    manifest = pd.read_csv(workdir / "results/data/dataset/manifest.tsv", sep="\t")
    sha = dict(zip(manifest.path, manifest.sha256, strict=True))
    assert sha[f"COVID/{target.name}"] == sha[f"COVID/{other.name}"]  # the new bytes were read


# --- against the pipeline's own scoring ---------------------------------------------------------


def scored_test_images(run: Path) -> tuple[pd.DataFrame, list[str]]:
    """The shipped model's locked-test predictions and the absolute paths of those images."""
    scored = read_predictions(run_dir(run, "final", "all") / "predictions.tsv")
    scored = scored[scored.part == "test"].reset_index(drop=True)
    receipt = json.loads((run / "results/data/dataset/source.json").read_text())
    return scored, [str(run / receipt["root"] / p) for p in scored.path]


def test_predictions_identical_to_scoring(demo_run, tmp_path):
    scored, paths = scored_test_images(demo_run)
    model = demo_run / "results/model.safetensors"
    with pytest.warns(DemoModelWarning):  # the demo run's model says where it came from
        api = load_model(model).predict(paths)
    out = tmp_path / "cli.csv"
    proc = vitct("predict", str(model), *paths, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    cli = pd.read_csv(out, keep_default_na=False)
    expected = np.where(scored.prob_covid >= 0.5, "COVID", "non-COVID").tolist()
    for table in (api, cli):
        assert table.path.tolist() == paths
        assert (table.error == "").all()
        assert table.predicted.tolist() == expected
        # Scoring writes 6 decimals. The same pixels through the same model give the same
        # numbers up to float sums in other batch sizes, which can tip the 6th decimal.
        np.testing.assert_allclose(table.prob_covid, scored.prob_covid, rtol=0, atol=1.01e-6)
        flags = table.unfamiliar.astype(str).str.lower() == "true"
        assert flags.tolist() == scored.unfamiliar.astype(bool).tolist()


def test_predict_rule_classifies_a_configured_folder(demo_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(demo_run, workdir, symlinks=True)  # keeps mtimes: nothing upstream reruns
    scored, paths = scored_test_images(workdir)
    scans = workdir / "new_scans"
    (scans / "more").mkdir(parents=True)
    shutil.copy(paths[0], scans / "one.png")
    shutil.copy(paths[-1], scans / "more" / "two.png")
    (scans / "broken.png").write_bytes(Path(paths[1]).read_bytes()[:300])
    (scans / "notes.txt").write_text("not a scan")
    write_config(workdir, demo_run_config(predict={"inputs": {"new": "new_scans"}}))
    assert "predict" not in jobs_to_run(workdir)  # never part of `all`

    model = workdir / "results/model.safetensors"
    trained = model.stat().st_mtime_ns
    snakemake(workdir, "results/predictions/new.csv")
    assert model.stat().st_mtime_ns == trained  # only the predict job ran
    table = pd.read_csv(workdir / "results/predictions/new.csv", keep_default_na=False)
    assert list(table.columns) == COLUMNS
    names = ["broken.png", "more/two.png", "one.png"]  # sorted; notes.txt is no image
    assert table.path.tolist() == [f"new_scans/{n}" for n in names]
    assert "truncated" in table.error[0]
    expected = scored.iloc[[-1, 0]]  # two.png, one.png
    # other batch companions than in scoring: equal up to the 6 decimals written
    np.testing.assert_allclose(table.prob_covid[1:].astype(float), expected.prob_covid, atol=2e-6)
    log = (workdir / "results/logs/predict/new.log").read_text()
    assert "classified 2 of 3 images" in log and "could not classify new_scans/broken.png" in log
    assert (workdir / "results/benchmarks/predict/new.tsv").exists()

    unknown = snakemake(workdir, "results/predictions/other.csv", check=False)
    assert unknown.returncode != 0
    assert "predict.inputs has no entry 'other'" in unknown.stdout + unknown.stderr
