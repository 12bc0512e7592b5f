"""The whole pipeline on the tiny demo config: outputs, report, rerun-only-what-changed, and the
predict rule and command against the pipeline's own evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    REPO,
    TINY_IMAGES,
    demo_run_config,
    jobs_to_run,
    only,
    snakemake,
    tiny_config,
    vitct,
    write_config,
)

from vitct.predict import COLUMNS, DemoModelWarning, load_model

pytestmark = pytest.mark.slow

METRIC_KEYS = {"accuracy", "precision", "recall", "f1", "mcc", "roc_auc"}


def test_every_contracted_output_exists(demo_run: Path):
    results = demo_run / "results"
    for name in (
        "report.html",
        "summary.md",
        "sweep/summary.tsv",
        "sweep/best_params.json",
        "sweep/grid.png",
        "final/metrics.json",
        "final/model.safetensors",
        "final/model_config.json",
        "final/history.tsv",
        "final/curves.png",
        "final/predictions.csv",
        "final/confusion_matrix.png",
        "final/roc.png",
        "final/attention/rollout.png",
        "final/attention/patch_grid.png",
        "final/attention/heads_1.png",
        "ablation/ablation.tsv",
        "ablation/ablation.png",
        "cv/folds.tsv",
        "cv/runs.tsv",
        "cv/folds_summary.tsv",
        "cv/headline.json",
        "cv/runs.png",
        "cv/baselines.json",
        "cv/fold1_seed1/predictions.tsv",
    ):
        assert (results / name).stat().st_size > 0, name
    for checkpoint in ("final/pretrain_resume.pt", "final/resume.pt"):  # removed once done
        assert not (results / checkpoint).exists(), checkpoint
    metrics = json.loads((results / "final/metrics.json").read_text())
    assert METRIC_KEYS <= metrics.keys()
    assert metrics["positive_class"] == "COVID"
    assert all(0.0 <= metrics[k] <= 1.0 for k in METRIC_KEYS - {"mcc"})


def test_sweep_has_one_row_per_combination_and_a_deterministic_best(demo_run: Path):
    summary = pd.read_csv(demo_run / "results/sweep/summary.tsv", sep="\t")
    assert len(summary) == 4  # 2 patch sizes x 2 head counts
    assert {"patch_size", "heads", "val_mcc", "val_accuracy", "val_loss"} <= set(summary.columns)
    best = json.loads((demo_run / "results/sweep/best_params.json").read_text())
    top = summary.sort_values(["val_mcc", "val_loss"], ascending=[False, True]).iloc[0]
    assert best["value"] == pytest.approx(top["val_mcc"])
    for run_dir in (demo_run / "results/sweep").glob("*~*"):
        history = pd.read_csv(run_dir / "history.tsv", sep="\t")
        assert list(history.epoch) == [1, 2]
        assert (run_dir / "curves.png").exists() and (run_dir / "model.safetensors").exists()
        assert not (run_dir / "resume.pt").exists()  # removed once the job finished


def test_report_says_it_is_demo_data_and_embeds_its_figures(demo_run: Path):
    html = (demo_run / "results/report.html").read_text()
    assert "DEMO" in html and "NOT real CT scans" in html
    assert "Made from real data" not in html
    assert html.count("data:image/png;base64,") >= 7  # self-contained: no external images
    assert 'src="results/' not in html
    for section in (
        "Colour modes per class",
        "Sweep: 4 combinations",
        "Final model",
        "Reproducibility",
        "Run time per job",
        "COVID is the positive class",
        "Ablation: what each ingredient buys",
        "grey-histogram accuracy",
        "ViT minus grey histogram",
        "Cross-validation: the protocol's headline",
        "locked test: ensemble of the fold models",
    ):
        assert section in html


def test_report_opens_with_the_headline_that_summary_md_holds(demo_run: Path):
    html = (demo_run / "results/report.html").read_text()
    summary = (demo_run / "results/summary.md").read_text().splitlines()
    assert "synthetic demo slices, NOT real CT data" in summary[0]
    headline = summary[4 : summary.index("", 2)]  # the shortcut meter's table follows
    rows = [line.split(" | ")[0].strip("| ") for line in headline]
    assert rows[0].startswith("ViT, final model") and rows[1].startswith("1-NN") and len(rows) == 3
    first_screen = html[: html.index("<h2>Test metrics</h2>")]  # before any detail
    accuracy = summary[4].split(" | ")[1]  # the ViT's accuracy with its interval
    assert "How good is it, on what, compared with what" in first_screen
    assert accuracy in first_screen and "grey-level histograms" in first_screen


def test_shortcut_meter_scores_the_final_models_input_and_the_report_shows_it(demo_run: Path):
    meter = json.loads(only(demo_run.glob("results/baseline/shortcut_meter_*.json")).read_text())
    assert meter["model_input"] == Path(TINY_IMAGES).name  # the final model's cache
    assert meter["fitted_on"] == "train+val" and meter["external"] == {}
    split = pd.read_csv(demo_run / "results/data/split.tsv", sep="\t")
    assert meter["n_fitted"] == (split.split != "test").sum()
    assert meter["test"]["n"] == (split.split == "test").sum()
    assert set(meter["test"]["ci95"]) == {"accuracy", "mcc", "roc_auc"}
    cell = "{:.3f} [{:.3f}, {:.3f}]".format(
        meter["test"]["accuracy"], *meter["test"]["ci95"]["accuracy"]
    )
    summary = (demo_run / "results/summary.md").read_text()
    assert f"| test split (n = {meter['test']['n']}) | {cell} |" in summary
    html = (demo_run / "results/report.html").read_text()
    assert "Shortcut meter" in html and cell in html


def test_both_baselines_are_scored_under_both_split_strategies(demo_run: Path):
    baselines = json.loads((demo_run / "results/baseline/baselines.json").read_text())
    for name in ("nearest_neighbour", "grey_histogram"):
        for strategy in ("random", "grouped"):
            scored = baselines[name][strategy]["all_test"]
            assert scored["n"] > 0 and 0.0 <= scored["accuracy"] <= 1.0, (name, strategy)


def test_ablation_compares_each_variant_with_the_final_model(demo_run: Path):
    results = demo_run / "results"
    table = pd.read_csv(results / "ablation/ablation.tsv", sep="\t", keep_default_na=False)
    assert list(table.variant) == ["final model", "no_augmentation"]
    final, variant = table.iloc[0], table.iloc[1]
    assert variant.changes == "augment=False"
    final_metrics = json.loads((results / "final/metrics.json").read_text())
    assert final.test_accuracy == pytest.approx(final_metrics["accuracy"])
    variant_metrics = json.loads((results / "ablation/no_augmentation/metrics.json").read_text())
    points = 100 * (final_metrics["accuracy"] - variant_metrics["accuracy"])
    assert variant.accuracy_points == pytest.approx(points, abs=1e-3)
    assert variant.accuracy_points_low <= variant.accuracy_points <= variant.accuracy_points_high
    trained = json.loads((results / "ablation/no_augmentation/train_metrics.json").read_text())
    assert trained["training"]["augment"] is False
    assert trained["model"] == json.loads((results / "final/model_config.json").read_text())
    # Augmentation does not shape pretraining: the variant starts from the final model's.
    assert (results / "final/pretrained.pt").exists()
    assert not (results / "ablation/no_augmentation/pretrained.pt").exists()
    log = (results / "logs/ablation/train_no_augmentation.log").read_text()
    assert "starting from the given pretraining (1 epochs)" in log
    assert "pretrain epoch" not in log


def test_training_log_shows_epoch_loss_metric_and_time_left(demo_run: Path):
    log = (demo_run / "results/logs/train_final.log").read_text()
    assert "epoch 2/2 loss" in log and "val_mcc" in log and "left]" in log
    pretrain_log = (demo_run / "results/logs/pretrain_final.log").read_text()
    assert "pretrain epoch 1/1 reconstruction loss" in pretrain_log  # DEMO_RUN_FINAL pretrains


def test_each_sweep_job_declares_and_honours_its_threads(demo_run: Path):
    bench = sorted((demo_run / "results/benchmarks/sweep").glob("*.tsv"))
    assert len(bench) == 4
    for path in bench:
        row = pd.read_csv(path, sep="\t").iloc[0]
        # One thread: CPU time cannot exceed wall time by much (process start-up aside).
        assert row["cpu_time"] <= row["s"] * 1.3 + 1.0, path.name


def test_a_finished_run_has_nothing_left_to_do(demo_run: Path):
    assert jobs_to_run(demo_run) == {}


def test_cross_validation_runs_every_fold_and_seed_and_scores_the_baselines_on_them(
    demo_run: Path,
):
    results = demo_run / "results/cv"
    folds = pd.read_csv(results / "folds.tsv", sep="\t", keep_default_na=False)
    assert set(folds.fold[folds.split == "test"]) == {-1}
    assert set(folds.fold[folds.split != "test"]) == {0, 1}
    pool = folds[folds.split != "test"]  # under the random split a group may reach the test
    assert (pool.groupby("near_duplicate_group").fold.nunique() == 1).all()
    runs = pd.read_csv(results / "runs.tsv", sep="\t")
    assert sorted(zip(runs.fold, runs.seed, strict=True)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for run in runs.itertuples():  # each run held out exactly its own fold
        held = pd.read_csv(results / f"fold{run.fold}_seed{run.seed}/predictions.tsv", sep="\t")
        held = held[held.part == "held_out"]
        assert set(held.path) == set(folds.path[folds.fold == run.fold])
    headline = json.loads((results / "headline.json").read_text())
    assert headline["cv"]["accuracy"] == pytest.approx(runs.held_out_accuracy.mean())
    low, high = headline["cv_ci95"]["accuracy"]
    assert low <= headline["cv"]["accuracy"] <= high
    assert headline["seeds"] == [0, 1] and headline["folds"] == 2
    assert {"nearest_neighbour", "grey_histogram"} <= headline["baselines"].keys()
    ablation = pd.read_csv(demo_run / "results/ablation/cv_ablation.tsv", sep="\t")
    assert list(ablation.variant) == ["final model", "no_augmentation"]
    assert ablation.cv_accuracy[0] == pytest.approx(headline["cv"]["accuracy"])
    assert {"accuracy_points_low", "accuracy_points_high", "distinguishable"} <= set(ablation)
    intervals = json.loads((demo_run / "results/final/metrics.json").read_text())
    assert intervals["ci95_resamples"] == "near-duplicate groups (cluster bootstrap)"


def test_adding_a_seed_trains_only_the_new_runs_and_new_folds_only_cross_validation(
    demo_run: Path,
):
    config = demo_run_config()
    try:
        write_config(
            demo_run, {**config, "evaluation": {**config["evaluation"], "seeds": [0, 1, 2]}}
        )
        new_runs = {"pretrain_cv": 1, "train_cv": 2, "evaluate_cv": 2, "cv_summary": 1}
        # the ablation's variant over the new runs too
        new_runs.update({"train_ablation_cv": 2, "evaluate_ablation_cv": 2, "cv_ablation_table": 1})
        new_runs.update({"report": 1, "all": 1})
        assert jobs_to_run(demo_run) == new_runs
        write_config(demo_run, {**config, "evaluation": {**config["evaluation"], "folds": 3}})
        assert jobs_to_run(demo_run) == {
            "assign_folds": 1,
            "cv_baselines": 1,
            "train_cv": 6,
            "evaluate_cv": 6,
            "cv_summary": 1,
            "train_ablation_cv": 6,
            "evaluate_ablation_cv": 6,
            "cv_ablation_table": 1,
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


DOWNSTREAM_OF_FINAL = {"train_final": 1, "evaluate": 1, "attention_maps": 1, "report": 1, "all": 1}


def test_the_final_model_trains_with_the_sweeps_best_combination(demo_run: Path):
    best = json.loads((demo_run / "results/sweep/best_params.json").read_text())["params"]
    final = json.loads((demo_run / "results/final/train_metrics.json").read_text())
    assert best.items() <= {**final["model"], **final["training"]}.items()


def test_a_sweep_over_folds_trains_each_combination_on_each_fold(project_copy: Path):
    write_config(project_copy, tiny_config(sweep={"folds": 2}, evaluation={"folds": 2}))
    try:
        jobs = planned(project_copy)
        assert jobs["train_sweep_fold"] == 8 and "train_sweep" not in jobs  # 4 combinations
        assert jobs["assign_folds"] == 1 and jobs["aggregate_sweep"] == 1
    finally:
        write_config(project_copy, tiny_config())


def test_changing_final_epochs_reruns_only_final_stages(project_copy: Path):
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
        assert planned(project_copy) == {
            "train_sweep": 2,
            "aggregate_sweep": 1,
            **DOWNSTREAM_OF_FINAL,
        }
    finally:
        write_config(project_copy, tiny_config())


def test_adding_an_ablation_variant_trains_only_that_variant(project_copy: Path):
    html = (project_copy / "results/report.html").read_text()
    assert "Ablation" not in html  # no variants configured: no section, no extra training
    write_config(project_copy, tiny_config(ablation={"variants": {"no_clip": {"grad_clip": 0}}}))
    try:
        assert planned(project_copy) == {
            "train_ablation": 1,
            "evaluate_ablation": 1,
            "ablation_table": 1,
            "report": 1,
            "all": 1,
        }
    finally:
        write_config(project_copy, tiny_config())


def test_editing_the_model_code_reruns_training(project_copy: Path):
    model_py = project_copy / "src/vitct/model.py"
    original = model_py.read_text()
    assert planned(project_copy) == {}
    model_py.write_text(original + "\n# a change to the model code\n")
    try:
        assert planned(project_copy) == {
            "train_sweep": 4,
            "aggregate_sweep": 1,
            **DOWNSTREAM_OF_FINAL,
        }
    finally:
        model_py.write_text(original)


def test_a_larger_final_image_size_preprocesses_once_more_and_keeps_the_sweep(
    project_copy: Path,
):
    larger = tiny_config(final={"overrides": {"epochs": 2, "image_size": 64}})
    write_config(project_copy, larger)
    try:
        # the shortcut meter reads the final model's input
        assert planned(project_copy) == {
            "preprocess": 1,
            "shortcut_meter": 1,
            **DOWNSTREAM_OF_FINAL,
        }
        snakemake(project_copy, snakefile=project_copy / "Snakefile")
        final = project_copy / "results/final"
        assert json.loads((final / "model_config.json").read_text())["image_size"] == 64
        assert (project_copy / "results/data/images_64px_none_raw.npz").exists()
        metrics = json.loads((final / "metrics.json").read_text())
        assert metrics["n"] == 12  # scored on the same test images as before
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
                "no_smoothing": {"label_smoothing": 0.0},  # same pretraining as the final model
                "no_drop_path": {"drop_path": 0.0},  # another model: pretrains for itself
            }
        },
    )
    write_config(project_copy, pretrained)
    try:
        plan = planned(project_copy)
        assert plan["pretrain_final"] == 1 and plan["pretrain_ablation"] == 1
        assert plan["train_ablation"] == 2
        snakemake(project_copy, snakefile=project_copy / "Snakefile")
        ablation = project_copy / "results/ablation"
        assert (ablation / "no_drop_path/pretrained.pt").exists()
        assert not (ablation / "no_smoothing/pretrained.pt").exists()
        # A setting that pretraining ignores reruns the training, not the pretraining.
        pretrained["final"]["overrides"]["label_smoothing"] = 0.2
        write_config(project_copy, pretrained)
        plan = planned(project_copy)
        assert "pretrain_final" not in plan and "pretrain_ablation" not in plan
        assert plan["train_final"] == 1 and plan["train_ablation"] == 2
        # One that shapes it (the share of hidden patches) pretrains again.
        pretrained["final"]["overrides"]["mask_ratio"] = 0.75
        write_config(project_copy, pretrained)
        assert planned(project_copy)["pretrain_final"] == 1
        # Kept by mtime-only rerun triggers, a pretraining that no longer fits is refused by name.
        proc = snakemake(
            project_copy,
            "--rerun-triggers",
            "mtime",
            "--forcerun",
            "train_final",
            check=False,
            snakefile=project_copy / "Snakefile",
        )
        assert proc.returncode != 0
        assert (
            "PretrainingMismatchError: results/final/pretrained.pt: the pretrained weights were "
            "made with other settings (mask_ratio differ)"
        ) in proc.stderr
    finally:
        write_config(project_copy, tiny_config())
        snakemake(project_copy, snakefile=project_copy / "Snakefile")  # without pretraining


def test_snakemake_report_collects_the_annotated_outputs(demo_run: Path, tmp_path: Path):
    import zipfile

    target = tmp_path / "snakemake-report.zip"
    snakemake(demo_run, "--report", str(target))
    names = zipfile.ZipFile(target).namelist()
    for figure in ("grid.png", "confusion_matrix.png", "roc.png", "rollout.png", "curves.png"):
        assert any(n.endswith(figure) for n in names), figure


def test_a_file_name_with_braces_is_no_wildcard(folder, tmp_path):
    shutil.move(folder / "COVID" / "Covid (2).png", folder / "COVID" / "Covid {2}.png")
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_config(workdir, tiny_config(dataset={"source": "local", "path": str(folder)}))
    assert jobs_to_run(workdir)["fetch_data"] == 1  # the DAG builds: no WildcardError


# --- against the pipeline's own evaluation ------------------------------------------------------


def evaluation_images(run: Path) -> tuple[pd.DataFrame, list[str]]:
    """Evaluation's predictions.csv and the absolute paths of its test images."""
    evaluation = pd.read_csv(run / "results/final/predictions.csv")
    root = run / json.loads((run / "results/data/source.json").read_text())["root"]
    return evaluation, [str(root / p) for p in evaluation.path]


@pytest.mark.slow
def test_predictions_identical_to_evaluation(demo_run, tmp_path):
    evaluation, paths = evaluation_images(demo_run)
    model = demo_run / "results/final/model.safetensors"
    with pytest.warns(DemoModelWarning):  # the demo run's model says where it came from
        api = load_model(model).predict(paths)
    out = tmp_path / "cli.csv"
    proc = vitct("predict", str(model), *paths, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    cli = pd.read_csv(out, keep_default_na=False)
    for table in (api, cli):
        assert table.path.tolist() == paths
        assert (table.error == "").all()
        assert table.predicted.tolist() == evaluation.predicted.tolist()
    # Evaluation writes 6 decimals. The same pixels through the same model give the same
    # numbers up to float sums in other batch sizes, which can tip the 6th decimal.
    for table in (api, cli):
        np.testing.assert_allclose(table.prob_covid, evaluation.prob_covid, rtol=0, atol=1.01e-6)


@pytest.mark.slow
def test_predict_rule_classifies_a_configured_folder(demo_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(demo_run, workdir, symlinks=True)  # keeps mtimes: nothing upstream reruns
    evaluation, paths = evaluation_images(workdir)
    scans = workdir / "new_scans"
    (scans / "more").mkdir(parents=True)
    shutil.copy(paths[0], scans / "one.png")
    shutil.copy(paths[-1], scans / "more" / "two.png")
    (scans / "broken.png").write_bytes(Path(paths[1]).read_bytes()[:300])
    (scans / "notes.txt").write_text("not a scan")
    write_config(workdir, demo_run_config(predict={"inputs": {"new": "new_scans"}}))
    assert "predict" not in jobs_to_run(workdir)  # never part of `all`

    model = workdir / "results/final/model.safetensors"
    trained = model.stat().st_mtime_ns
    snakemake(workdir, "results/predictions/new.csv")
    assert model.stat().st_mtime_ns == trained  # only the predict job ran
    table = pd.read_csv(workdir / "results/predictions/new.csv", keep_default_na=False)
    assert list(table.columns) == COLUMNS
    names = ["broken.png", "more/two.png", "one.png"]  # sorted; notes.txt is no image
    assert table.path.tolist() == [f"new_scans/{n}" for n in names]
    assert "truncated" in table.error[0]
    expected = evaluation.iloc[[-1, 0]]  # two.png, one.png
    assert table.predicted[1:].tolist() == expected.predicted.tolist()
    # other batch companions than in evaluation: equal up to the 6 decimals written
    np.testing.assert_allclose(table.prob_covid[1:].astype(float), expected.prob_covid, atol=2e-6)
    log = (workdir / "results/logs/predict/new.log").read_text()
    assert "classified 2 of 3 images" in log and "could not classify new_scans/broken.png" in log
    assert (workdir / "results/benchmarks/predict/new.tsv").exists()

    unknown = snakemake(workdir, "results/predictions/other.csv", check=False)
    assert unknown.returncode != 0
    assert "predict.inputs has no entry 'other'" in unknown.stdout + unknown.stderr
