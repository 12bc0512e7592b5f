"""The report's tables as rows of text: the headline (cross-validation first), the ablation,
and results/summary.md."""

from __future__ import annotations

import copy

import pandas as pd
from test_summaries import experiment, plan_of

from vitct.evaluation.baselines import TITLES
from vitct.evaluation.summaries import headline
from vitct.pipeline.report import summary_markdown
from vitct.pipeline.tables import (
    FLAGGED,
    SHORTCUT_METER_NOTE,
    ablation_rows,
    calibration_rows,
    headline_rows,
    number,
)

EXTERNAL = "external:scanner_b"
NAN = float("nan")


def metrics(accuracy: float, n: int, flagged=None, roc_auc=0.9, interval=True) -> dict:
    result = {
        "n": n,
        "accuracy": accuracy,
        "mcc": accuracy - 0.2,
        "roc_auc": roc_auc,
        "flagged_share": flagged,
    }
    if interval:
        result["ci95"] = {
            "accuracy": [accuracy - 0.05, accuracy + 0.05],
            "mcc": [accuracy - 0.3, accuracy - 0.1],
            "roc_auc": [roc_auc - 0.05, roc_auc + 0.05],  # NaN bounds with a NaN value
        }
    return result


def baseline(held_out: float, test: float, external: float) -> dict:
    return {
        "held_out": metrics(held_out, 400),
        "test": metrics(test, 100),
        EXTERNAL: metrics(external, 50, roc_auc=NAN),  # one class drawn: no ROC curve
    }


HEADLINE = {
    "cv": {**metrics(0.91, 400, flagged=0.04), "folds": 5, "seeds": [0, 1]},
    "shipped": {
        "run": {"recipe": "final", "fold": "all", "seed": 0},
        "test": metrics(0.93, 100, flagged=0.05),
        EXTERNAL: metrics(0.61, 50, flagged=0.8, interval=False),
        "test_no_near_duplicate_seen": {"n": 40, "accuracy": 0.9},
    },
    "fold_models": {
        "test": {"mean": metrics(0.9, 100, 0.06), "ensemble": metrics(0.92, 100)},
        EXTERNAL: {"mean": metrics(0.6, 50, 0.7), "ensemble": metrics(0.62, 50)},
    },
    "baselines": {
        "pixels_1nn": baseline(0.81, 0.8, 0.55),
        "grey_histogram": baseline(0.88, 0.87, 0.5),
        "shortcut_meter": baseline(0.52, 0.51, 0.5),
    },
    "calibration": {
        EXTERNAL: {
            "ece_raw": 0.3,
            "ece": 0.25,
            "brier_raw": 0.35,
            "brier": 0.3,
            "n": 50,
            "runs": 1,
            "temperature": 1.8,
        },
        "test": {
            "ece_raw": 0.08,
            "ece": 0.03,
            "brier_raw": 0.07,
            "brier": 0.06,
            "n": 100,
            "runs": 1,
            "temperature": 1.8,
        },
        "held_out": {
            "ece_raw": 0.1,
            "ece": 0.04,
            "brier_raw": 0.09,
            "brier": 0.08,
            "n": 400,
            "runs": 10,
            "temperature": 1.65,
            "temperature_range": [1.2, 2.1],
        },
    },
    "protocol": {
        "epoch_and_threshold": "each run's inner validation split",
        "recipe": "the best grid combination",
        "optimistic": [],
    },
}
RECEIPT = {"real_data": False, "counts": {"COVID": 600, "non-COVID": 590}}


def test_the_headline_leads_with_cross_validation_then_the_shipped_model_then_the_rest():
    rows = headline_rows(HEADLINE)
    pairs = [(r["model"], r["scored on"]) for r in rows]
    knn, grey = TITLES["pixels_1nn"], TITLES["grey_histogram"]
    assert pairs == [
        (
            "ViT, final recipe: cross-validation mean over 5 folds x 2 seed(s)",
            "held-out folds (n = 400)",
        ),
        ("ViT, shipped model", "locked test (n = 100)"),
        ("ViT, fold models' mean", "locked test (n = 100)"),
        ("ViT, ensemble of the fold models", "locked test (n = 100)"),
        (knn, "held-out folds (n = 400)"),
        (knn, "locked test (n = 100)"),
        (grey, "held-out folds (n = 400)"),
        (grey, "locked test (n = 100)"),
        ("ViT, shipped model", "external set scanner_b (n = 50)"),
        ("ViT, fold models' mean", "external set scanner_b (n = 50)"),
        ("ViT, ensemble of the fold models", "external set scanner_b (n = 50)"),
        (knn, "external set scanner_b (n = 50)"),
        (grey, "external set scanner_b (n = 50)"),
    ]


def test_headline_cells_carry_intervals_flags_and_never_nan():
    rows = headline_rows(HEADLINE)
    cv, shipped = rows[0], rows[1]
    assert cv["accuracy [95% CI]"] == "0.910 [0.860, 0.960]"
    assert cv["MCC [95% CI]"] == "0.710 [0.610, 0.810]"
    assert (cv[FLAGGED], shipped[FLAGGED]) == ("4.0%", "5.0%")
    external = rows[8]
    assert external["accuracy [95% CI]"] == "0.610"  # no interval: the value alone
    assert external[FLAGGED] == "80.0%"
    assert all(r[FLAGGED] == "" for r in rows if not r["model"].startswith("ViT"))
    # The 1-NN's 0/1 votes rank nothing; an external set of one class has no ROC-AUC.
    assert all(r["ROC-AUC [95% CI]"] == "" for r in rows if r["model"].startswith("1-NN"))
    assert rows[-1]["ROC-AUC [95% CI]"] == ""
    assert rows[7]["ROC-AUC [95% CI]"] == "0.900 [0.850, 0.950]"  # grey levels on the test
    cells = [cell for r in rows for cell in r.values()]
    assert not any("nan" in cell.lower() for cell in cells)
    assert all(set(r) == set(rows[0]) for r in rows)


def test_without_cross_validation_the_shipped_model_leads_and_no_held_out_row_is_shown():
    headline = copy.deepcopy(HEADLINE)
    headline["cv"], headline["fold_models"] = None, {}
    for parts in headline["baselines"].values():
        del parts["held_out"]
    rows = headline_rows(headline)
    assert rows[0]["model"] == "ViT, shipped model"
    assert rows[0]["scored on"] == "locked test (n = 100)"
    assert not any("held-out" in r["scored on"] for r in rows)
    assert len(rows) == 6


def test_the_rows_of_a_computed_headline_lead_with_cross_validation_and_hold_no_nan():
    # The summaries' own output, not a hand-made dict: the two modules agree on its keys.
    predictions, baselines, metrics = experiment()
    computed = headline(predictions, baselines, metrics, plan_of(), 50)
    rows = headline_rows(computed)
    assert rows[0]["model"].startswith("ViT, final recipe: cross-validation mean over 2 folds")
    assert rows[1]["model"] == "ViT, shipped model" and rows[1]["scored on"].startswith("locked")
    assert rows[0]["accuracy [95% CI]"].count("[") == 1
    assert len(rows) == 13
    text = summary_markdown(computed, RECEIPT, "grouped")
    assert "nan" not in text.lower()


def test_summary_markdown_is_the_source_line_the_table_and_what_chose_what():
    text = summary_markdown(HEADLINE, RECEIPT, "grouped")
    lines = text.splitlines()
    assert lines[0].startswith("1,190 synthetic demo slices, NOT real CT data")
    assert "a locked test split of 100 images (grouped split)" in lines[0]
    table = lines[2:17]  # header, rule, 13 rows
    assert all(line.startswith("|") for line in table) and lines[17] == ""
    assert {line.count("|") for line in table} == {7}
    assert "Chosen on validation data only" in lines[18]
    assert lines[19] == (
        "Calibration (temperature scaling, T = 1.8, fitted on the inner validation split): on "
        "the locked test, ECE 0.080 before, 0.030 after; Brier 0.070 before, 0.060 after; "
        "prob_covid is the calibrated probability."
    )
    assert "Optimistic by a choice" not in text
    assert SHORTCUT_METER_NOTE in lines
    assert "| locked test | 0.510 [0.460, 0.560]" in text  # the meter's own rows
    assert "nan" not in text.lower()


def test_summary_markdown_states_each_optimistic_choice():
    headline = copy.deepcopy(HEADLINE)
    headline["protocol"]["optimistic"] = ["the cross-validation mean: chosen on its images"]
    text = summary_markdown(headline, RECEIPT, "grouped")
    assert "Optimistic by a choice: the cross-validation mean: chosen on its images." in text


def test_numbers_are_empty_rather_than_nan():
    assert number(None) == "" and number(NAN) == ""
    assert number(0.5, [NAN, NAN]) == "0.500"
    assert number(0.5, [0.25, 0.75]) == "0.500 [0.250, 0.750]"


def ablation() -> pd.DataFrame:
    row = {"scored_on": "held-out folds", "runs": 10}
    numbers = {"accuracy": 0.9, "accuracy_low": 0.85, "accuracy_high": 0.95}
    return pd.DataFrame(
        [
            {**row, **numbers, "variant": "final", "changes": ""},
            {
                **row,
                **numbers,
                "variant": "no_cutmix",
                "changes": "cutmix=0.0",
                "accuracy_points": 5.04,
                "accuracy_points_low": 2.0,
                "accuracy_points_high": 8.0,
                "mcc_points": 10.0,
                "mcc_points_low": 4.0,
                "mcc_points_high": 16.0,
                "distinguishable": True,
            },
            {
                **row,
                **numbers,
                "variant": "deeper",
                "changes": "depth=6",
                "accuracy_points": -1.26,
                "accuracy_points_low": -3.0,
                "accuracy_points_high": 0.5,
                "mcc_points": -2.0,
                "mcc_points_low": NAN,
                "mcc_points_high": NAN,
                "distinguishable": False,
            },
        ]
    )


def test_ablation_rows_give_signed_points_and_a_verdict_beside_each_variant():
    final, better, worse = ablation_rows(ablation())
    assert final["recipe"] == "final recipe" and final["runs"] == 10
    assert final["accuracy [95% CI]"] == "0.900 [0.850, 0.950]"
    assert final["final minus this, accuracy points"] == "" and final["distinguishable"] == ""
    assert better["recipe"] == "no_cutmix (cutmix=0.0)"
    assert better["final minus this, accuracy points"] == "+5.0 [+2.0, +8.0]"
    assert better["final minus this, MCC points"] == "+10.0 [+4.0, +16.0]"
    assert better["distinguishable"] == "yes"
    assert worse["final minus this, accuracy points"] == "-1.3 [-3.0, +0.5]"
    assert worse["final minus this, MCC points"] == "-2.0"  # no interval without resamples
    assert worse["distinguishable"] == "no"


def test_the_calibration_table_leads_with_cross_validation_then_the_locked_test_then_elsewhere():
    rows = calibration_rows(HEADLINE)
    assert [r["set"] for r in rows] == [
        "held-out folds (n = 400), cross-validation mean",
        "locked test (n = 100), shipped model",
        "external set scanner_b (n = 50), shipped model",
    ]
    cv, test = rows[0], rows[1]
    assert (cv["ECE before"], cv["ECE after"]) == ("0.100", "0.040")
    assert (cv["Brier before"], cv["Brier after"]) == ("0.090", "0.080")
    assert cv["temperature"] == "1.65 (1.2 to 2.1)"  # the runs' mean and range
    assert test["temperature"] == "1.8"
    unknown = copy.deepcopy(HEADLINE)
    unknown["calibration"]["test"]["temperature"] = None  # a run from before calibration
    assert calibration_rows(unknown)[1]["temperature"] == "1 (none fitted)"
    assert calibration_rows({"calibration": {}}) == []


def test_the_rows_of_a_computed_headline_carry_its_calibration():
    predictions, baselines, metrics = experiment()
    computed = headline(predictions, baselines, metrics, plan_of(), 0)
    rows = calibration_rows(computed)
    assert [r["set"].split(" (")[0] for r in rows] == [
        "held-out folds",
        "locked test",
        "external set scanner_b",
    ]
    assert all(r["ECE before"] and r["Brier after"] for r in rows)
    assert "Calibration (temperature scaling" in summary_markdown(computed, RECEIPT, "grouped")
