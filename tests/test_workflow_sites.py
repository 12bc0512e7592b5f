"""The pipeline with the demo generator's second scanner (demo:b) as a new site, on the tiny
config: adapted with n of its labelled slices drawn from its pool (pooled retraining, the
default, then fine-tuning) and scored on its evaluation part only (the learning curve), and as
a second training source (per-source metrics and the leave-one-source-out table); both end in a
report and a model card."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import jobs_to_run, snakemake, tiny_config

from vitct.evaluation.scoring import read_predictions
from vitct.model.artifact import read_metadata

pytestmark = pytest.mark.slow

SITE = "scanner_b"
SMALL = {
    "sweep": {"grid": {"patch_size": [8, 16]}, "threads": 1, "mem_mb": 500},
    "evaluation": {"attention_images": 1, "bootstrap": 20, "folds": 2, "seeds": [0],
                   "external": {SITE: "demo:b"}},
}  # fmt: skip


CURVE = {"site": SITE, "labels": [0, 6, "all"], "draws": 2, "epochs": 2}


def site_config(**adaptation) -> dict:
    return tiny_config(**SMALL, adaptation=adaptation)


@pytest.fixture(scope="module")
def site_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("site_run")
    snakemake(workdir, config=site_config(**CURVE))
    return workdir


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("two_sources")
    snakemake(workdir, config=site_config(site=SITE, train_on_pool=True, labels=[]))
    return workdir


def site_split(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "results/data/site_split.tsv", sep="\t")


def draws_adapt_on_pool_slices_and_scores_read_the_evaluation_part(root: Path, method: str):
    split = site_split(root)
    assert (split.groupby("near_duplicate_group").part.nunique() == 1).all()
    pool, evaluation = set(split.path[split.part == "pool"]), set(split.path[split.part == "eval"])
    adaptations = sorted((root / "results/runs").glob(f"adapt~{method}~*/draw*/seed0"))
    assert [p.parts[-3] for p in adaptations] == [
        f"adapt~{method}~n6", f"adapt~{method}~n6", f"adapt~{method}~nall"
    ]  # fmt: skip
    for run in adaptations:
        metrics = json.loads((run / "train_metrics.json").read_text())
        assert set(metrics["adapted_on"]) <= pool, run
        on_site = read_predictions(run / "predictions.tsv").query(f"part == 'external:{SITE}'")
        assert set(on_site.path) == evaluation, run
        record = read_metadata(run / "model.safetensors")["data"]["adaptation"]
        assert record["site"] == SITE and record["method"] == method
        assert record["slices"] == len(metrics["adapted_on"])
    shipped = read_predictions(root / "results/runs/final/all/seed0/predictions.tsv")
    assert set(shipped.path[shipped.part == f"external:{SITE}"]) == evaluation


def test_every_pooled_draw_adapts_on_pool_slices_and_every_score_reads_the_evaluation_part(
    site_run,
):
    draws_adapt_on_pool_slices_and_scores_read_the_evaluation_part(site_run, "pooled")


def test_the_learning_curve_is_in_the_report_and_the_model_card(site_run):
    curve = pd.read_csv(site_run / "results/summary/learning_curve.tsv", sep="\t")
    assert curve["labelled site slices"].astype(str).tolist() == ["0", "6", "all"]
    assert curve.draws.tolist() == [1, 2, 1]
    assert curve["in-source points"].iloc[0] == 0
    html = (site_run / "results/report.html").read_text()
    assert f"Adapting to {SITE} with a few of its labels" in html
    card = (site_run / "results/model_card.md").read_text()
    assert "**Not a diagnostic device.**" in card and f"### Adapted to {SITE}" in card
    assert "synthetic demo slices, NOT CT" in card


def test_switching_to_finetune_runs_only_the_adaptations_and_their_scores(site_run):
    (site_run / "config.yaml").write_text(json.dumps(site_config(**CURVE, method="finetune")))
    try:
        jobs = jobs_to_run(site_run)
        assert jobs.get("adapt") == 3 and "train" not in jobs and "partition" not in jobs, jobs
        snakemake(site_run)
        draws_adapt_on_pool_slices_and_scores_read_the_evaluation_part(site_run, "finetune")
    finally:
        (site_run / "config.yaml").write_text(json.dumps(site_config(**CURVE)))


def test_two_sources_are_dealt_alike_and_never_share_a_group_across_folds(two_sources):
    table = pd.read_csv(two_sources / "results/data/partition.tsv", sep="\t")
    assert set(table.source) == {"main", SITE}
    assert (table.groupby("near_duplicate_group").fold.nunique() == 1).all()
    pool = table[~table.test]
    assert pool.groupby("source").fold.nunique().eq(2).all()
    site = site_split(two_sources)
    trained = set(table.path[table.source == SITE].str.removeprefix(f"{SITE}/"))
    assert trained == set(site.path[site.part == "pool"])  # the pool trains, the rest is scored


def test_two_sources_report_per_source_and_leave_one_source_out(two_sources):
    loso = pd.read_csv(two_sources / "results/summary/leave_one_source_out.tsv", sep="\t")
    assert sorted(set(loso.source)) == ["main", SITE]
    left_out = loso[loso["trained on"] == "the other sources"].set_index("source").images
    table = pd.read_csv(two_sources / "results/data/partition.tsv", sep="\t")
    assert left_out.to_dict() == table.source.value_counts().to_dict()
    headline = json.loads((two_sources / "results/summary/headline.json").read_text())
    assert set(headline["sources"]["cv"]) == {"main", SITE}
    shipped = read_predictions(two_sources / "results/runs/final/all/seed0/predictions.tsv")
    site = site_split(two_sources)
    assert set(shipped.path[shipped.part == f"external:{SITE}"]) == set(
        site.path[site.part == "eval"]
    )
    html = (two_sources / "results/report.html").read_text()
    assert "<h2>Per source</h2>" in html and "<h2>Leave one source out</h2>" in html
    assert "### Leave one source out" in (two_sources / "results/model_card.md").read_text()
