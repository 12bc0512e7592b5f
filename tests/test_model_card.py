"""The model card: written from a run's own results, the same blocks as Markdown (beside the
model file) and as HTML (in the report), saying what the model is not for, on what it was
trained, and each known failure mode with the run's own figure."""

from __future__ import annotations

import copy
import re

import pandas as pd
import pytest
from test_summaries import experiment, plan_of

from vitct.evaluation.summaries import headline
from vitct.pipeline.model_card import SHORTCUT_WARNING, model_card, to_html, to_markdown

RECEIPT = {"real_data": True, "origin": "Kaggle a/b", "counts": {"COVID": 60, "non-COVID": 50}}
PARTITION = {
    "strategy": "grouped",
    "groups": {"images": 110, "groups": 90},
    "sources": {"main": 110},
    "test_images": 20,
    "pool_images": 90,
    "folds": {"0": 45, "1": 45},
    "memorisation": {
        "random": {"test_images": 20, "test_with_near_duplicate_outside": 0.4,
                   "pixels_1nn_test_accuracy": 0.9},
        "grouped": {"test_images": 20, "test_with_near_duplicate_outside": 0.0,
                    "pixels_1nn_test_accuracy": 0.6},
    },
}  # fmt: skip
SHIPPED_RUN = {
    "model": {"depth": 6, "heads": 4, "embed_dim": 64, "patch_size": 16, "image_size": 128},
    "training": {"epochs": 30},
    "parameters": 123456,
    "images": {"train": 70, "val": 20},
    "best_epoch": 12,
    "calibration": {"temperature": 1.7},
}
CONFIG = {
    "split": {"near_duplicate_threshold": 0.95, "strategy": "grouped", "test": 0.2, "seed": 1},
    "training": {"seed": 0},
    "adaptation": {"method": "finetune", "trainable": "last_block", "epochs": 20, "lr": 1e-4},
}


@pytest.fixture(scope="module")
def computed() -> dict:
    predictions, baselines, metrics = experiment()
    return headline(predictions, baselines, metrics, plan_of(), 20)


def card_of(result, receipts=None, loso=None, curve=None):
    return model_card(
        result, receipts or {"main": RECEIPT}, PARTITION, SHIPPED_RUN, CONFIG,
        pd.DataFrame() if loso is None else loso, pd.DataFrame() if curve is None else curve,
        "abc1234",
    )  # fmt: skip


def test_the_card_says_what_it_is_not_for_and_on_what_it_was_trained(computed):
    text = to_markdown(card_of(computed))
    assert "**Not a diagnostic device.**" in text
    assert "`main`: real CT slices from Kaggle a/b (60 COVID, 50 non-COVID; 110 used" in text
    assert "synthetic" not in text.lower()  # real data: no demo warning
    assert "123,456 parameters" in text and "T = 1.7" in text
    for section in ("Intended use", "Training data", "Evaluation protocol", "Performance",
                    "Calibration", "Out-of-distribution flag", "Shortcut meter",
                    "Known failure modes", "Reporting checklists"):  # fmt: skip
        assert re.search(rf"^## {section}", text, re.M), section
    assert "nan" not in text.lower().replace("nano", "")


def test_a_demo_run_says_so_first(computed):
    demo = {**RECEIPT, "real_data": False, "origin": "synthetic slices"}
    blocks = card_of(computed, {"main": demo})
    assert blocks[1][0] == "p" and "not CT data" in blocks[1][1]


def test_known_failure_modes_carry_the_runs_own_figures(computed):
    text = to_markdown(card_of(computed))
    external = computed["shipped"]["external:scanner_b"]["accuracy"]
    assert f"accuracy {external:.3f}" in text
    assert "40% of test slices have a near-duplicate" in text
    meter = copy.deepcopy(computed)
    meter["baselines"]["shortcut_meter"] = {"test": {"accuracy": SHORTCUT_WARNING + 0.1}}
    assert "Grey levels alone still tell" in to_markdown(card_of(meter))
    meter["baselines"]["shortcut_meter"] = {"test": {"accuracy": SHORTCUT_WARNING - 0.1}}
    assert "Grey levels alone still tell" not in to_markdown(card_of(meter))


def test_leave_one_source_out_and_the_learning_curve_appear_only_with_their_tables(computed):
    assert "Leave one source out" not in to_markdown(card_of(computed))
    loso = pd.DataFrame([{"source": "ucsd", "trained on": "the other sources", "images": 9,
                          "runs": 1, **{f"{m}{e}": 0.6 for m in ("accuracy", "mcc", "roc_auc")
                                        for e in ("", "_low", "_high")}}])  # fmt: skip
    cells = {
        f"site {m}{e}": 0.7 for m in ("accuracy", "mcc", "roc_auc") for e in ("", "_low", "_high")
    }
    curve = pd.DataFrame([
        {"labelled site slices": n, "draws": 3, "site images": 50, **cells,
         "locked test accuracy": 0.9, "in-source points": -0.5, "in-source points low": -1.5,
         "in-source points high": 0.5}
        for n in (0, 10)
    ])  # fmt: skip
    text = to_markdown(card_of(computed, loso=loso, curve=curve))
    assert "### Leave one source out" in text and "| ucsd | the other sources | 9 | 1 |" in text
    assert "| 0 | 3 | 50 |" in text and "(the shipped model)" in text
    assert "| 10 | 3 | 50 | 0.700 [0.700, 0.700]" in text and "-0.5 [-1.5, +0.5]" in text
    assert (
        "fine-tuning the shipped model (last block trained, 20 epochs at learning rate 0.0001)"
        in text
    )
    pooled = {**CONFIG, "adaptation": {**CONFIG["adaptation"], "method": "pooled"}}
    text = to_markdown(
        model_card(
            computed, {"main": RECEIPT}, PARTITION, SHIPPED_RUN, pooled, loso, curve, "abc1234"
        )
    )
    assert "Adapted by the final recipe trained again with the drawn slices among its" in text
    assert "learning rate" not in text


def test_markdown_and_html_hold_the_same_tables_and_html_escapes(computed):
    blocks = card_of(computed)
    html, markdown = to_html(blocks), to_markdown(blocks)
    tables = [rows for kind, rows in blocks if kind == "table" and rows]
    assert html.count("<table") == len(tables)
    body_rows = sum(len(rows) for rows in tables)
    assert html.count("<tr>") == body_rows + len(tables)  # a header row each
    assert len(re.findall(r"^\| --- \|", markdown, re.M)) == len(tables)
    assert "<b>Not a diagnostic device.</b>" in html and "**" not in html
    risky = to_html([("p", "a <script> & `code <x>`")])
    assert risky == "<p>a &lt;script&gt; &amp; <code>code &lt;x&gt;</code></p>"
