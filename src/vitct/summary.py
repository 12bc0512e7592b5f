"""The headline: how good the final model is, on what, compared with what. One small table (the
ViT's test metrics with their intervals beside the two baselines on the same test images) and
one sentence on the data; the report opens with them and the report rule writes them to
results/summary.md, which the README pastes. Under them, the shortcut meter: how much of the
label the grey levels of the model's own input carry."""

from __future__ import annotations

import math

# (key in metrics.json, column title)
METRICS = (("accuracy", "accuracy"), ("mcc", "MCC"), ("roc_auc", "ROC-AUC"))
UNSEEN = "no_near_duplicate_in_train"
# The share of a set's images the final model calls unfamiliar (vitct.familiarity): ~5% in-source.
FLAGGED = "flagged unfamiliar"


def _number(value: float | None, interval: list | None = None) -> str:
    if value is None or math.isnan(value):
        return ""
    return f"{value:.3f}" + (" [{:.3f}, {:.3f}]".format(*interval) if interval else "")


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def headline_rows(metrics: dict, baselines: dict, strategy: str, parameters: int) -> list[dict]:
    """One row per model, its numbers as text: the ViT with its 95% intervals, then the 1-NN on
    pixels (memorisation) and the grey-level histogram baseline (no shape), scored on the same
    test split (`strategy`: the split the ViT was tested on), and the share of the test images
    the ViT flags as unfamiliar."""
    knn = baselines["nearest_neighbour"][strategy]
    grey = baselines["grey_histogram"][strategy]
    models = (
        (f"ViT, final model ({parameters:,} parameters)", metrics, metrics, metrics.get("ci95")),
        ("1-NN on 32x32 pixels (memorisation)", knn["all_test"], knn, None),
        ("gradient boosting on grey-level histograms (no shape)", grey["all_test"], grey, None),
    )
    unseen_title = f"accuracy, no near-identical training slice (n = {knn[UNSEEN].get('n', 0)})"
    rows = []
    for name, overall, subsets, intervals in models:
        row = {"model": name}
        for key, title in METRICS:
            row[f"{title} [95% CI]"] = _number(overall.get(key), (intervals or {}).get(key))
        row[unseen_title] = _number(subsets.get(UNSEEN, {}).get("accuracy"))
        row[FLAGGED] = ""
        rows.append(row)
    rows[0][FLAGGED] = _share(metrics.get("flagged_share"))
    rows[1]["ROC-AUC [95% CI]"] = ""  # the 1-NN's 0/1 votes rank nothing
    return rows


def external_rows(name: str, metrics: dict) -> list[dict]:
    """Rows for one external set (evaluation.external), beside the in-source ones: the ViT with
    its intervals and the share of the set it flags as unfamiliar, then both baselines fitted on
    the in-source images, scored on the set."""
    title = f"on external set {name} (n = {metrics['n']})"
    models = (
        (f"ViT, final model, {title}", metrics),
        (f"1-NN on 32x32 pixels, {title}", metrics["baselines"]["nearest_neighbour"]),
        (f"grey-level histograms, {title}", metrics["baselines"]["grey_histogram"]),
    )
    rows = [{"model": model, **_cells(scored), FLAGGED: ""} for model, scored in models]
    rows[0][FLAGGED] = _share(metrics.get("flagged_share"))
    rows[1]["ROC-AUC [95% CI]"] = ""  # the 1-NN's 0/1 votes rank nothing
    return rows


def _cells(scored: dict) -> dict:
    """Accuracy, MCC and ROC-AUC, each with its 95% interval when there is one."""
    intervals = scored.get("ci95", {})
    return {f"{t} [95% CI]": _number(scored.get(k), intervals.get(k)) for k, t in METRICS}


SHORTCUT_METER_NOTE = (
    "Shortcut meter: the grey-level histogram classifier refitted on the final model's own input "
    "(its images after all preprocessing), fitted on train+validation. It reads only the global "
    "grey levels of what the ViT sees: near 0.5 accuracy, grey levels alone no longer tell the "
    "classes apart there (the shortcut is gone); near 1.0, they still give the label away."
)


def shortcut_rows(meter: dict) -> list[dict]:
    """The shortcut meter (shortcut_meter_*.json) on the test split, then on each external set."""
    sets = [("test split", meter["test"])]
    sets += [(f"external set {name}", scored) for name, scored in meter["external"].items()]
    return [{"scored on": f"{name} (n = {s['n']})", **_cells(s)} for name, s in sets]


def source_line(receipt: dict, n_test: int, strategy: str) -> str:
    """On what: how many test images, of which data, split how."""
    counts = receipt.get("counts", {})
    per_class = ", ".join(f"{n:,} {name}" for name, n in counts.items())
    if receipt.get("real_data"):
        data = f"real CT slices ({per_class}; {receipt.get('origin', 'origin unknown')})"
    else:
        data = f"synthetic demo slices, NOT real CT data ({per_class})"
    return (
        f"{n_test:,} test images ({strategy} split) of {sum(counts.values()):,} {data}; COVID is "
        "the positive class; 95% cluster-bootstrap intervals (near-duplicate groups resampled)."
    )


def _markdown_table(rows: list[dict]) -> list[str]:
    titles = list(rows[0])
    lines = ["| " + " | ".join(titles) + " |", "|" + " --- |" * len(titles)]
    return lines + ["| " + " | ".join(row[t] for t in titles) + " |" for row in rows]


def summary_markdown(rows: list[dict], source: str, meter: list[dict] | None = None) -> str:
    """The headline as a short markdown table under its one-line source; with `meter` (rows of
    shortcut_rows), the shortcut meter's table under its note after a blank line."""
    lines = [source, "", *_markdown_table(rows)]
    if meter:
        lines += ["", SHORTCUT_METER_NOTE, "", *_markdown_table(meter)]
    return "\n".join(lines) + "\n"
