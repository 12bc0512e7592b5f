"""The report's tables and sentences as rows of text, one source for the HTML report,
results/summary.md and the model card: how a metric, its interval and a share are written, and
which rows each table has."""

from __future__ import annotations

import math

import pandas as pd

from vitct.evaluation.baselines import TITLES
from vitct.evaluation.scoring import EXTERNAL_PREFIX, HELD_OUT, TEST
from vitct.model.ood import SET_LEVEL

METRICS = (("accuracy", "accuracy"), ("mcc", "MCC"), ("roc_auc", "ROC-AUC"))
TEST_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "mcc", "roc_auc")
FLAGGED = "flagged unfamiliar"
SHORTCUT_METER_NOTE = (
    "Shortcut meter: the grey-level histogram classifier refitted on the final recipe's own "
    "input (its images after all preprocessing), fitted on the images each run saw. It reads only "
    "the global grey levels of what the ViT sees: near 0.5 accuracy, grey levels alone no longer "
    "tell the classes apart there (the shortcut is gone); near 1.0, they still give the label "
    "away."
)


FLAG_NOTE = (
    "A slice is flagged unfamiliar when its distance to the training slices, in the model's "
    "features or in its grey levels as decoded, is beyond what about 5% of the validation slices "
    "reach (thresholds from validation data only); and every slice of a set (an external set, "
    "the images of one `vitct predict` call) is flagged when the set holds far more slices "
    "beyond the threshold than in-source slices would (a one-sided binomial test at "
    f"{SET_LEVEL} against the validation share). A flag means unlike the training data, not "
    "wrong."
)
CALIBRATION_NOTE = (
    "Temperature scaling divides the model's logits by one number T > 0, fitted on each run's "
    "inner validation split (never a scored image) to minimise the negative log-likelihood; it "
    "changes no predicted class, so accuracy, MCC and ROC-AUC stay as they are. ECE: expected "
    "calibration error over 10 equal-width bins of the COVID probability, the gap between the "
    "share of COVID slices and the mean probability in each bin, weighted by the bin's count "
    "(0 is calibrated). Brier: the mean squared difference between the probability and the "
    "label. Before: the model's own probability; after: its logits divided by T (what "
    "prob_covid and vitct predict give)."
)


def number(value, interval=None) -> str:
    """A metric as text, its interval beside it; empty where there is none (never NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = f"{value:.3f}"
    if interval and not any(v is None or math.isnan(v) for v in interval):
        text += " [{:.3f}, {:.3f}]".format(*interval)
    return text


def share(value) -> str:
    return (
        "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"
    )


def cells(scored: dict | None) -> dict:
    scored = scored or {}
    intervals = scored.get("ci95", {})
    return {f"{title} [95% CI]": number(scored.get(k), intervals.get(k)) for k, title in METRICS}


def part_title(part: str) -> str:
    if part == HELD_OUT:
        return "held-out folds"
    if part == TEST:
        return "locked test"
    return "external set " + part.removeprefix(EXTERNAL_PREFIX)


def headline_rows(headline: dict) -> list[dict]:
    """The report's first table: the cross-validation mean beside the shipped model's locked
    test, the fold models there, the baselines on the same images, then every external set."""
    cv, shipped = headline["cv"], headline["shipped"]
    fold_models, baselines = headline["fold_models"], headline["baselines"]
    rows = []

    def row(model: str, part: str, scored: dict | None, flagged: bool = True) -> None:
        if scored:
            rows.append(
                {
                    "model": model,
                    "scored on": f"{part_title(part)} (n = {scored['n']})",
                    **cells(scored),
                    FLAGGED: share(scored.get("flagged_share")) if flagged else "",
                }
            )

    if cv:
        runs = f"{cv['folds']} folds x {len(cv['seeds'])} seed(s)"
        row(f"ViT, final recipe: cross-validation mean over {runs}", HELD_OUT, cv)
    row("ViT, shipped model", TEST, shipped.get(TEST))
    parts = [TEST, *sorted(p for p in shipped if p.startswith(EXTERNAL_PREFIX))]
    for part in parts:
        if part != TEST:
            row("ViT, shipped model", part, shipped.get(part))
        if part in fold_models:
            row("ViT, fold models' mean", part, fold_models[part]["mean"])
            row("ViT, ensemble of the fold models", part, fold_models[part]["ensemble"])
        for name in ("pixels_1nn", "grey_histogram"):
            if name in baselines:
                if part == TEST and cv:
                    row(TITLES[name], HELD_OUT, baselines[name].get(HELD_OUT), flagged=False)
                row(TITLES[name], part, baselines[name].get(part), flagged=False)
    for r in rows:
        if r["model"].startswith("1-NN"):
            r["ROC-AUC [95% CI]"] = ""  # its 0/1 votes rank nothing
    return rows


def temperature_text(value, spread=None) -> str:
    if value is None:
        return "1 (none fitted)"
    text = f"{value:.3g}"
    if spread and spread[0] != spread[1]:
        text += " ({:.3g} to {:.3g})".format(*spread)
    return text


def calibration_rows(headline: dict) -> list[dict]:
    """The calibration table: per set, the ECE and Brier score of the COVID probability before
    and after temperature scaling, and the temperature (the cross-validation runs': their mean
    and range). The cross-validation mean first, then the shipped model's locked test, then
    each external set."""
    parts = headline.get("calibration", {})
    order = [HELD_OUT, TEST, *sorted(p for p in parts if p.startswith(EXTERNAL_PREFIX))]
    rows = []
    for part in order:
        if part not in parts:
            continue
        c = parts[part]
        model = "cross-validation mean" if part == HELD_OUT else "shipped model"
        rows.append(
            {
                "set": f"{part_title(part)} (n = {c['n']}), {model}",
                "ECE before": number(c.get("ece_raw")),
                "ECE after": number(c.get("ece")),
                "Brier before": number(c.get("brier_raw")),
                "Brier after": number(c.get("brier")),
                "temperature": temperature_text(c.get("temperature"), c.get("temperature_range")),
            }
        )
    return rows


def calibration_line(headline: dict) -> str | None:
    """One sentence for summary.md: the shipped model's locked-test ECE and Brier score before
    and after its temperature (None when the headline has no calibration)."""
    test = headline.get("calibration", {}).get(TEST)
    if not test:
        return None
    return (
        f"Calibration (temperature scaling, T = {temperature_text(test.get('temperature'))}, "
        f"fitted on the inner validation split): on the locked test, ECE {number(test['ece_raw'])} "
        f"before, {number(test['ece'])} after; Brier {number(test['brier_raw'])} before, "
        f"{number(test['brier'])} after; prob_covid is the calibrated probability."
    )


def source_line(receipt: dict, headline: dict, strategy: str) -> str:
    """On what: how many images, of which data, split how, intervals of what."""
    counts = receipt.get("counts", {})
    per_class = ", ".join(f"{n:,} {name}" for name, n in counts.items())
    if receipt.get("real_data"):
        data = f"real CT slices ({per_class}; {receipt.get('origin', 'origin unknown')})"
    elif "DICOM" in receipt.get("origin", ""):
        data = f"synthetic demo DICOM files, NOT real CT data ({per_class}; a series per patient)"
    else:
        data = f"synthetic demo slices, NOT real CT data ({per_class})"
    test = headline["shipped"].get(TEST, {}).get("n", 0)
    return (
        f"{sum(counts.values()):,} {data}; a locked test split of {test:,} images "
        f"({strategy} split), the rest in grouped folds; COVID is the positive class; 95% "
        "cluster-bootstrap intervals (near-duplicate groups resampled)."
    )


def shortcut_rows(headline: dict) -> list[dict]:
    meter = headline["baselines"].get("shortcut_meter", {})
    return [{"scored on": part_title(p), **cells(s)} for p, s in sorted(meter.items())]


def ablation_rows(ablation: pd.DataFrame) -> list[dict]:
    """The ablation table as the report shows it: each recipe's mean with its interval, the
    paired difference from the final recipe, and the verdict, in as few columns as it takes."""
    rows = []
    for r in ablation.itertuples():
        final = r.variant == "final"
        rows.append(
            {
                "scored on": r.scored_on,
                "recipe": "final recipe" if final else f"{r.variant} ({r.changes})",
                "runs": r.runs,
                "accuracy [95% CI]": number(r.accuracy, (r.accuracy_low, r.accuracy_high)),
                "final minus this, accuracy points": ""
                if final
                else points(r.accuracy_points, r.accuracy_points_low, r.accuracy_points_high),
                "final minus this, MCC points": ""
                if final
                else points(r.mcc_points, r.mcc_points_low, r.mcc_points_high),
                "distinguishable": "" if final else ("yes" if r.distinguishable else "no"),
            }
        )
    return rows


def points(value, low, high) -> str:
    if value is None or math.isnan(value):
        return ""
    bounds = "" if math.isnan(low) else f" [{low:+.1f}, {high:+.1f}]"
    return f"{value:+.1f}{bounds}"


def sweep_frame(sweep: pd.DataFrame, grid: list[str], metric: str) -> pd.DataFrame:
    """The sweep table's columns a reader needs, best combination first."""
    column = f"val_{metric}"
    keep = [*grid, column, *([f"{column}_se"] if f"{column}_se" in sweep else [])]
    keep += [c for c in ("val_accuracy", "val_roc_auc", "val_loss", "best_epoch") if c != column]
    keep += ["folds", "parameters"]
    return sweep[keep].sort_values(column, ascending=False)


def test_metric_rows(test: dict) -> list[dict]:
    """The shipped model's every metric on the locked test, its interval where it has one."""
    intervals = test.get("ci95", {})
    return [
        {"metric": m, "value": number(test.get(m)), "95% CI": number(None)}
        | ({"95% CI": "[{:.3f}, {:.3f}]".format(*intervals[m])} if m in intervals else {})
        for m in TEST_METRICS
    ]


def memorisation_rows(partition: dict) -> list[dict]:
    """Under each way of dealing the locked test: how many of its images have a near-copy
    outside it, and how well the 1-NN on pixels, which can only memorise, does on them."""
    return [
        {
            "locked test dealt": strategy
            + (" (used)" if strategy == partition["strategy"] else ""),
            "test images": check["test_images"],
            "with a near-duplicate outside the test split": share(
                check["test_with_near_duplicate_outside"]
            ),
            "1-NN on pixels, test accuracy": f"{check['pixels_1nn_test_accuracy']:.3f}",
        }
        for strategy, check in partition["memorisation"].items()
    ]


def markdown_table(rows: list[dict]) -> list[str]:
    titles = list(rows[0])
    lines = ["| " + " | ".join(titles) + " |", "|" + " --- |" * len(titles)]
    return lines + ["| " + " | ".join(str(row[t]) for t in titles) + " |" for row in rows]


def flag_rows(headline: dict) -> list[dict]:
    """The out-of-distribution flag on every set the shipped model is scored on: the share of
    images beyond its threshold, the share flagged (with the images of a set flagged as a
    whole), and the accuracy on the images it lets through beside the accuracy on all."""
    shipped = headline["shipped"]
    parts = [TEST, *sorted(p for p in shipped if p.startswith(EXTERNAL_PREFIX))]
    rows = []
    for part in (p for p in parts if p in shipped):
        s = shipped[part]
        through = s.get("unflagged") or {}
        rows.append(
            {
                "scored on": f"{part_title(part)} (n = {s['n']})",
                "called COVID": share(s.get("predicted_covid_share")),
                "beyond the threshold": share(s.get("own_flagged_share")),
                FLAGGED: share(s.get("flagged_share")),
                "not flagged": str(through.get("n", "")),
                "accuracy, not flagged": number(through.get("accuracy")),
                "accuracy, all": number(s.get("accuracy")),
            }
        )
    return rows


def source_rows(headline: dict) -> list[dict]:
    """With several training sources: every metric per source, the cross-validation mean on the
    held-out folds and the shipped model on the locked test."""
    sources = headline.get("sources") or {}
    rows = []
    for scope, part in (("cv", HELD_OUT), ("test", TEST)):
        for name, s in sorted(sources.get(scope, {}).items()):
            model = "cross-validation mean" if scope == "cv" else "shipped model"
            rows.append(
                {"source": name, "scored on": f"{part_title(part)} (n = {s['n']}), {model}"}
                | cells(s)
            )
    return rows


def _interval_cells(row, prefix: str = "") -> dict:
    return {
        f"{title} [95% CI]": number(
            getattr(row, f"{prefix}{m}"),
            (getattr(row, f"{prefix}{m}_low"), getattr(row, f"{prefix}{m}_high")),
        )
        for m, title in METRICS
    }


def loso_rows(loso: pd.DataFrame) -> list[dict]:
    """The leave-one-source-out table: each source scored by the final recipe trained without it,
    beside the cross-validation runs (trained with it) on its held-out images."""
    frame = loso.rename(columns=lambda c: c.replace(" ", "_"))
    return [
        {
            "source": r.source,
            "trained on": r.trained_on,
            "images": str(r.images),
            "runs": str(r.runs),
        }
        | _interval_cells(r)
        for r in frame.itertuples()
    ]


def adaptation_method(adaptation: dict) -> str:
    """How the config's adaptation adapts the shipped model, in words."""
    if adaptation["method"] == "pooled":
        return "the final recipe trained again with the drawn slices among its training images"
    return (
        f"fine-tuning the shipped model ({adaptation['trainable'].replace('_', ' ')} trained, "
        f"{adaptation['epochs']} epochs at learning rate {adaptation['lr']:g}) on the drawn slices"
    )


def curve_rows(curve: pd.DataFrame) -> list[dict]:
    """The learning curve: per number of labelled site slices, the adapted models' mean over
    draws on the site's evaluation part, and their locked-test accuracy beside the shipped
    model's (n 0), paired."""
    frame = curve.rename(columns=lambda c: c.replace(" ", "_").replace("-", "_"))
    return [
        {
            "labelled site slices": str(r.labelled_site_slices),
            "draws": str(r.draws),
            "site images scored": str(r.site_images),
        }
        | _interval_cells(r, "site_")
        | {
            "locked test accuracy": number(r.locked_test_accuracy),
            "in-source points [95% CI]": "(the shipped model)"
            if str(r.labelled_site_slices) == "0"
            else points(r.in_source_points, r.in_source_points_low, r.in_source_points_high),
        }
        for r in frame.itertuples()
    ]
