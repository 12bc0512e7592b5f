"""The model card: what the shipped model is, what it is for and not for, on what it was
trained, how it was evaluated, its numbers per set and per source with intervals, its
calibration, its out-of-distribution flag, the shortcut meter and its known failure modes,
written by the pipeline from the run's own results (results/model_card.md, beside the model
file, and a section of the report).

It answers the items of the reporting checklists that apply to a training pipeline (CLAIM 2024
for AI in medical imaging, TRIPOD+AI for prediction models); its last section says where each is
answered, or why it cannot be.

A card is a list of blocks, rendered as Markdown or HTML by the same code: ("h2", text),
("p", text), ("ul", [items]) or ("table", [rows as dicts of text]).
"""

from __future__ import annotations

import html

import pandas as pd

from vitct.evaluation.scoring import EXTERNAL_PREFIX, TEST
from vitct.pipeline.tables import (
    CALIBRATION_NOTE,
    FLAG_NOTE,
    SHORTCUT_METER_NOTE,
    adaptation_method,
    calibration_rows,
    curve_rows,
    flag_rows,
    headline_rows,
    loso_rows,
    markdown_table,
    memorisation_rows,
    part_title,
    shortcut_rows,
    source_rows,
)

TITLE = "Model card: vitct Vision Transformer, COVID-19 or not on lung CT slices"
# The meter's accuracy above which grey levels alone still give a class away (a coin is 0.5).
SHORTCUT_WARNING = 0.65

INTENDED_USE = [
    "Research and teaching: telling axial lung CT slices of patients with COVID-19 from slices "
    "of patients without it, on slices like those it was trained on, and measuring how far such "
    "a model carries to scans from elsewhere.",
    "A starting point for a site's own model: adapt it with the site's labelled slices (the "
    "pipeline's `adaptation.site`, which retrains with them and measures the gain on the site's "
    "held-out slices, or `vitct adapt`) and measure it there before relying on any of its "
    "numbers.",
]
NOT_FOR = [
    "**Not a diagnostic device.** It is not cleared or approved by any regulator, has not been "
    "validated prospectively, and must not inform the diagnosis, triage or treatment of anyone.",
    "Not for scans from other hospitals, scanners or reconstructions without measuring it there "
    "first: trained on one source, models like it score near a coin elsewhere (see the external "
    "sets below).",
    "Not for whole CT volumes, patients or other diseases: it scores one slice at a time and "
    "knows two classes only; a slice of another lung disease is called one of the two.",
    "Not for images that are not axial lung CT slices (X-rays, photos, figures): the "
    "out-of-distribution flag catches many, not all.",
]
# (checklist item, the card's section or the reason it cannot be answered)
CHECKLIST = [
    ("Intended use, clinical role, what it is not for (CLAIM, TRIPOD+AI)", "Intended use"),
    ("Data sources, dates and settings (CLAIM, TRIPOD+AI)", "Training data"),
    (
        "Eligibility, exclusions, data quality checks (CLAIM)",
        "Training data: unreadable, blank and non-slice files are rejected and listed",
    ),
    (
        "Reference standard, labelling (CLAIM)",
        "Training data: the sources' own folder labels; not verified here",
    ),
    (
        "Patient demographics, subgroups, fairness (CLAIM, TRIPOD+AI)",
        "Not available: the public sources carry no age, sex or scanner per slice",
    ),
    (
        "Sample size and class balance (CLAIM, TRIPOD+AI)",
        "Training data; Evaluation protocol",
    ),
    (
        "Partition, leakage between sets (CLAIM, TRIPOD+AI)",
        "Evaluation protocol: near-duplicate groups, grouped folds and locked test",
    ),
    ("Model, inputs, preprocessing (CLAIM, TRIPOD+AI)", "Model"),
    (
        "Training and selection: what chose the epoch, threshold and recipe (CLAIM)",
        "Evaluation protocol",
    ),
    ("Performance with uncertainty (CLAIM, TRIPOD+AI)", "Performance"),
    ("External validation, robustness (CLAIM, TRIPOD+AI)", "Performance: external sets"),
    ("Calibration (TRIPOD+AI)", "Calibration"),
    ("Failure analysis, limitations (CLAIM, TRIPOD+AI)", "Known failure modes"),
    ("Code, data and reproducibility (CLAIM, TRIPOD+AI)", "Reproduce"),
]


def _source_block(name: str, receipt: dict, images: int | None) -> str:
    counts = ", ".join(f"{n:,} {c}" for c, n in receipt.get("counts", {}).items())
    kind = "real CT slices" if receipt.get("real_data") else "**synthetic demo slices, NOT CT**"
    used = f"; {images:,} used in this run" if images is not None else ""
    return f"`{name}`: {kind} from {receipt.get('origin', 'an unknown origin')} ({counts}{used})"


def failure_modes(headline: dict, partition: dict) -> list[str]:
    """Known failure modes, each with this run's own figure where it has one."""
    shipped, items = headline["shipped"], []
    for part in sorted(p for p in shipped if p.startswith(EXTERNAL_PREFIX)):
        s = shipped[part]
        items.append(
            f"Scans from elsewhere: on {part_title(part)} (never trained on) accuracy "
            f"{s['accuracy']:.3f}, ROC-AUC {s['roc_auc'] or float('nan'):.3f}, against "
            f"{shipped[TEST]['accuracy']:.3f} on the locked test: measure, and adapt, before use."
        )
    meter = headline["baselines"].get("shortcut_meter", {}).get(TEST)
    if meter and meter["accuracy"] >= SHORTCUT_WARNING:
        items.append(
            f"Grey levels alone still tell the classes apart in the model's input (the shortcut "
            f"meter's accuracy {meter['accuracy']:.3f} on the locked test): the model may read the "
            "sources' acquisition and export differences rather than the lungs."
        )
    grouped = partition.get("memorisation", {}).get("random")
    if grouped:
        items.append(
            f"Near-copies inflate random splits: dealt at random, "
            f"{grouped['test_with_near_duplicate_outside']:.0%} of test slices have a "
            "near-duplicate among the training slices; the figures here deal whole "
            "near-duplicate groups, the closest the data come to patients (patients are unknown)."
        )
    items += [
        "One slice at a time: no patient-level decision; neighbouring slices of one patient "
        "can disagree.",
        "Balanced classes: about half the slices are COVID; at a clinic's prevalence the share "
        "of COVID calls that are right (precision) would be lower.",
        "Probabilities are calibrated on the training sources' validation slices: on other "
        "sources they are not (see the calibration table).",
    ]
    return items


def model_card(
    headline: dict,
    receipts: dict[str, dict],
    partition: dict,
    shipped_run: dict,
    config: dict,
    loso: pd.DataFrame,
    curve: pd.DataFrame,
    revision: str,
) -> list[tuple]:
    """The card's blocks, from the run's headline, the sources' receipts (by source name), the
    partition summary, the shipped run's metrics file, the config and the optional tables."""
    model, training = shipped_run["model"], shipped_run["training"]
    images, groups = shipped_run["images"], partition["groups"]
    protocol, split = headline["protocol"], config["split"]
    calibration = shipped_run.get("calibration") or {}
    real = all(r.get("real_data") for r in receipts.values())
    card: list[tuple] = [("h1", TITLE)]
    if not real:
        card.append(("p", "**Demo run: trained and scored on synthetic slices, not CT data.** "
                     "Its numbers say the pipeline works, nothing about COVID-19."))  # fmt: skip
    card += [
        (
            "p",
            f"Written by the vitct pipeline from this run's results (code revision "
            f"`{revision}`). The model file `model.safetensors` beside this card checks its "
            "own integrity when loaded.",
        ),  # fmt: skip
        ("h2", "Model"),
        (
            "ul",
            [
                f"A Vision Transformer trained from scratch: depth {model['depth']}, "
                f"{model['heads']} heads, embedding {model['embed_dim']}, patches of "
                f"{model['patch_size']} px on {model['image_size']} px greyscale slices; "
                f"{shipped_run['parameters']:,} parameters.",
                f"Trained for up to {training['epochs']} epochs on {images['train']:,} "
                f"slices; epoch {shipped_run['best_epoch']} kept, by the inner validation split "
                f"({images['val']:,} slices).",
                "Output: the probability of COVID-19 (its logit divided by a temperature T = "
                f"{calibration.get('temperature', 1.0):.3g} fitted on the inner validation split), "
                "and an out-of-distribution score with a flag: above 1, the slice is unlike the "
                "training slices.",
            ],
        ),  # fmt: skip
        ("h2", "Intended use"),
        ("ul", INTENDED_USE),
        ("h3", "Not for"),
        ("ul", NOT_FOR),
        ("h2", "Training data"),
        (
            "ul",
            [_source_block(n, r, partition.get("sources", {}).get(n)) for n, r in receipts.items()],
        ),  # fmt: skip
        (
            "p",
            "Labels are the sources' own folders (COVID/, non-COVID/); the reference standard "
            "behind them is the publishers' and is not verified here. Files that do not decode "
            "or are not plausible slices (blank, coloured figures, strips) are rejected and "
            "listed in the report; exact copies are kept once.",
        ),  # fmt: skip
        ("h2", "Evaluation protocol"),
        (
            "ul",
            [
                "Near-duplicate groups (thumbnail similarity >= "
                f"{split['near_duplicate_threshold']}; {groups['groups']:,} groups over "
                f"{groups['images']:,} slices) stand in for patients: no group straddles "
                "two parts.",
                f"A locked test split of {partition['test_images']:,} slices ({split['strategy']}, "
                f"{split['test']:.0%}), scored only by finished models; the other "
                f"{partition['pool_images']:,} dealt into {len(partition['folds'])} grouped folds, "
                "stratified by class and source.",
                f"Epochs and flag thresholds: {protocol['epoch_and_threshold']}.",
                f"The recipe: {protocol['recipe']}.",
                f"Scored only: {protocol['scored_only']}.",
                *[f"Optimistic by a choice: {item}." for item in protocol["optimistic"]],
            ],
        ),  # fmt: skip
        ("h2", "Performance"),
        (
            "p",
            "95% cluster-bootstrap intervals (whole near-duplicate groups resampled). COVID "
            "is the positive class.",
        ),  # fmt: skip
        ("table", headline_rows(headline)),
    ]
    by_source = source_rows(headline)
    if by_source:
        card += [("h3", "Per source"), ("table", by_source)]
    if len(loso):
        card += [
            ("h3", "Leave one source out"),
            ("p", "The final recipe trained without each source and scored on all of it, "
                  "beside the cross-validation runs trained with it."),  # fmt: skip
            ("table", loso_rows(loso)),
        ]  # fmt: skip
    if len(curve):
        site = partition.get("site", {})
        card += [
            ("h3", f"Adapted to {site.get('name', 'the site')} with n of its labelled slices"),
            ("p", f"Adapted by {adaptation_method(config['adaptation'])}: n slices drawn by "
                  f"group from the site's adaptation pool ({site.get('pool', '?')} slices), "
                  f"scored on its evaluation part ({site.get('eval', '?')} slices) that no draw "
                  "touched; "
                  "n 0 is the shipped model. In-source: the locked test, paired with the shipped "
                  "model's."),  # fmt: skip
            ("table", curve_rows(curve)),
        ]  # fmt: skip
    card += [
        ("h2", "Calibration"),
        ("p", CALIBRATION_NOTE),
        ("table", calibration_rows(headline)),
        ("h2", "Out-of-distribution flag"),
        ("p", FLAG_NOTE),
        ("table", flag_rows(headline)),
        ("h2", "Shortcut meter"),
        ("p", SHORTCUT_METER_NOTE),
        ("table", shortcut_rows(headline)),
        ("h2", "Known failure modes"),
        ("ul", failure_modes(headline, partition)),
        ("table", memorisation_rows(partition)),
        ("h2", "Reproduce"),
        ("p", "`snakemake --cores 4` with this run's config (in the report); seeds: split "
              f"{split['seed']}, training {config['training']['seed']}."),  # fmt: skip
        ("h2", "Reporting checklists (CLAIM 2024, TRIPOD+AI): where each item is answered"),
        ("table", [{"item": item, "answered in": where} for item, where in CHECKLIST]),
    ]  # fmt: skip
    return card


def to_markdown(card: list[tuple]) -> str:
    lines: list[str] = []
    for kind, content in card:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + content, ""]
        elif kind == "p":
            lines += [content, ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in content] + [""]
        elif content:  # a table with rows
            lines += [*markdown_table(content), ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Markdown's **bold** and `code` as HTML, the rest escaped."""
    out, bold, code = [], False, False
    for i, piece in enumerate(html.escape(text).replace("**", "\0").split("`")):
        if i:
            code = not code
            out.append("<code>" if code else "</code>")
        if code:
            out.append(piece.replace("\0", "**"))
            continue
        for j, part in enumerate(piece.split("\0")):
            if j:
                bold = not bold
                out.append("<b>" if bold else "</b>")
            out.append(part)
    return "".join(out)


def to_html(card: list[tuple]) -> str:
    parts: list[str] = []
    for kind, content in card:
        if kind in ("h1", "h2", "h3"):
            level = int(kind[1]) + 1  # inside the report, under its own h2
            parts.append(f"<h{level}>{_inline(content)}</h{level}>")
        elif kind == "p":
            parts.append(f"<p>{_inline(content)}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in content) + "</ul>")
        elif content:
            head = "".join(f"<th>{html.escape(t)}</th>" for t in content[0])
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline(str(v))}</td>" for v in row.values()) + "</tr>"
                for row in content
            )
            parts.append(
                f'<div class="scroll"><table class="table"><tr>{head}</tr>{body}</table></div>'
            )
    return "\n".join(parts)
