"""The headline table: the ViT's test metrics with intervals beside both baselines."""

from __future__ import annotations

from vitct.summary import (
    FLAGGED,
    SHORTCUT_METER_NOTE,
    external_rows,
    headline_rows,
    shortcut_rows,
    source_line,
    summary_markdown,
)


def _scored(accuracy: float, unseen: float) -> dict:
    return {
        "all_test": {"n": 100, "accuracy": accuracy, "mcc": accuracy - 0.1, "roc_auc": 0.9},
        "no_near_duplicate_in_train": {"n": 40, "accuracy": unseen},
    }


METRICS = {
    "n": 100,
    "accuracy": 0.95,
    "mcc": 0.9,
    "roc_auc": 0.99,
    "ci95": {"accuracy": [0.91, 0.98], "mcc": [0.82, 0.96], "roc_auc": [0.98, 1.0]},
    "no_near_duplicate_in_train": {"n": 40, "accuracy": 0.925},
    "flagged_share": 0.05,
}
BASELINES = {
    "nearest_neighbour": {"grouped": _scored(0.8, 0.7), "random": _scored(0.5, 0.5)},
    "grey_histogram": {"grouped": _scored(0.9, 0.85), "random": _scored(0.5, 0.5)},
}


def test_headline_puts_the_vit_with_intervals_beside_both_baselines_on_its_split():
    vit, knn, grey = headline_rows(METRICS, BASELINES, "grouped", 12345)
    assert vit["model"] == "ViT, final model (12,345 parameters)"
    assert vit["accuracy [95% CI]"] == "0.950 [0.910, 0.980]"
    assert vit["MCC [95% CI]"] == "0.900 [0.820, 0.960]"
    assert (knn["accuracy [95% CI]"], grey["accuracy [95% CI]"]) == ("0.800", "0.900")
    assert knn["ROC-AUC [95% CI]"] == "" and grey["ROC-AUC [95% CI]"] == "0.900"
    unseen = "accuracy, no near-identical training slice (n = 40)"
    assert [row[unseen] for row in (vit, knn, grey)] == ["0.925", "0.700", "0.850"]


def test_summary_markdown_is_one_table_under_its_source_line():
    receipt = {"real_data": True, "origin": "Kaggle x/y", "counts": {"COVID": 1252, "non-COVID": 5}}
    source = source_line(receipt, 100, "grouped")
    assert source.startswith("100 test images (grouped split) of 1,257 real CT slices (1,252 COVID")
    assert "Kaggle x/y" in source
    lines = summary_markdown(headline_rows(METRICS, BASELINES, "grouped", 1), source).splitlines()
    assert lines[0] == source and lines[1] == ""
    table = lines[2:]
    assert len(table) == 5 and all(line.startswith("| ") or line.startswith("|-") for line in table)
    assert {line.count("|") for line in table} == {7}


def test_the_flagged_share_stands_beside_each_sets_accuracy():
    vit, knn, grey = headline_rows(METRICS, BASELINES, "grouped", 1)
    assert (vit[FLAGGED], knn[FLAGGED], grey[FLAGGED]) == ("5.0%", "", "")
    baselines = {"nearest_neighbour": {"accuracy": 0.5}, "grey_histogram": {"accuracy": 0.6}}
    external = {"n": 20, "accuracy": 0.55, "flagged_share": 0.85, "baselines": baselines}
    rows = external_rows("scanner_b", external)
    assert [row[FLAGGED] for row in rows] == ["85.0%", "", ""]
    assert list(rows[0]) == list(vit)[:4] + [FLAGGED]
    old = external_rows("scanner_b", {k: v for k, v in external.items() if k != "flagged_share"})
    assert old[0][FLAGGED] == ""  # metrics from before familiarity references


METER = {
    "model_input": "images_32px.npz",
    "test": {**METRICS, "n": 100, "accuracy": 0.52},
    "external": {"scanner_b": {"n": 20, "accuracy": 0.5, "mcc": 0.0, "roc_auc": 0.5}},
}


def test_shortcut_meter_has_a_row_for_the_test_split_and_each_external_set():
    test, external = shortcut_rows(METER)
    assert test["scored on"] == "test split (n = 100)"
    assert test["accuracy [95% CI]"] == "0.520 [0.910, 0.980]"
    assert external["scored on"] == "external set scanner_b (n = 20)"
    assert external["accuracy [95% CI]"] == "0.500"  # no bootstrap, no interval


def test_summary_markdown_puts_the_shortcut_meter_under_the_headline():
    rows = headline_rows(METRICS, BASELINES, "grouped", 1)
    lines = summary_markdown(rows, "source", shortcut_rows(METER)).splitlines()
    assert lines[:7] == summary_markdown(rows, "source").splitlines()
    assert lines[7:10] == ["", SHORTCUT_METER_NOTE, ""]
    assert "near 0.5 accuracy" in SHORTCUT_METER_NOTE
    assert lines[10].startswith("| scored on | accuracy [95% CI]") and len(lines) == 14
