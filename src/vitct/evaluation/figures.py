"""Figures: training curves, the sweep grid, confusion matrix, ROC, reliability diagrams (before
and after temperature scaling), the ablation and attention maps."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay  # noqa: E402

from vitct.atomic_files import write_output  # noqa: E402
from vitct.data.classes import CLASS_NAMES  # noqa: E402
from vitct.evaluation.metrics import (  # noqa: E402
    CALIBRATION_BINS,
    calibration_bins,
    expected_calibration_error,
)


def _save(fig, path, tight: bool = True) -> None:
    if tight:
        fig.tight_layout()
    kind = Path(path).suffix.lstrip(".") or "png"
    write_output(path, lambda f: fig.savefig(f, format=kind, dpi=110))
    plt.close(fig)


def plot_history(history: pd.DataFrame, path, title: str = "") -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_loss.plot(history.epoch, history.train_loss, label="train")
    ax_loss.plot(history.epoch, history.val_loss, label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(history.epoch, history.train_accuracy, label="train")
    ax_acc.plot(history.epoch, history.val_accuracy, label="validation")
    ax_acc.plot(history.epoch, history.val_mcc, label="validation MCC", linestyle="--")
    ax_acc.set(xlabel="epoch", ylabel="score", title="accuracy / MCC", ylim=(-0.05, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.legend(frameon=False)
        ax.grid(alpha=0.3)
    if title:
        # A final model's title lists all its overrides: wrapped, or it runs off both edges.
        fig.suptitle(textwrap.fill(title, width=100), fontsize="medium")
    _save(fig, path)


def plot_grid(summary: pd.DataFrame, params: list[str], metric: str, path) -> None:
    """Heatmaps of the selection metric: first two swept settings as axes, one panel per
    combination of the others."""
    if len(params) == 1:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        sns.barplot(data=summary, x=params[0], y=metric, ax=ax, color="tab:blue")
        ax.set(ylabel=metric)
        _save(fig, path)
        return
    rows, cols, rest = params[0], params[1], params[2:]
    panels = list(summary.groupby(rest)) if rest else [((), summary)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1, 3.4), squeeze=False)
    lo, hi = summary[metric].min(), summary[metric].max()
    for ax, (key, frame) in zip(axes[0], panels, strict=True):
        table = frame.pivot_table(index=rows, columns=cols, values=metric)
        sns.heatmap(
            table,
            annot=True,
            fmt=".3f",
            vmin=lo,
            vmax=hi,
            cmap="viridis",
            ax=ax,
            cbar=ax is axes[0][-1],
        )
        key = key if isinstance(key, tuple) else (key,)
        ax.set_title(", ".join(f"{p}={v}" for p, v in zip(rest, key, strict=True)) or metric)
    fig.suptitle(
        f"inner-validation {metric.removeprefix('val_')} per combination (mean over folds)"
    )
    _save(fig, path)


def plot_ablation(table: pd.DataFrame, path) -> None:
    """Points of accuracy and MCC each variant loses against the final recipe (bars), with
    paired cluster-bootstrap 95% intervals (whiskers), one row of panels per set scored on."""
    rows = table[table.variant != "final"]
    sets = list(dict.fromkeys(rows.scored_on))
    variants = list(dict.fromkeys(rows.variant))
    height = 0.35 * len(variants) + 1.2
    fig, axes = plt.subplots(
        len(sets), 2, figsize=(11, height * len(sets) + 0.6), squeeze=False, sharey=True
    )
    for row_axes, scored_on in zip(axes, sets, strict=True):
        frame = rows[rows.scored_on == scored_on].set_index("variant").reindex(variants)
        for ax, metric in zip(row_axes, ("accuracy", "mcc"), strict=True):
            value = frame[f"{metric}_points"].to_numpy()
            err = [value - frame[f"{metric}_points_low"], frame[f"{metric}_points_high"] - value]
            colours = ["tab:blue" if v >= 0 else "tab:red" for v in np.nan_to_num(value)]
            ax.barh(variants, value, xerr=err, color=colours, capsize=3)
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set(xlabel=f"final minus variant, {metric} points", title=f"{scored_on}: {metric}")
            ax.grid(axis="x", alpha=0.3)
        row_axes[0].invert_yaxis()
    fig.suptitle("What each ingredient buys (positive: the final recipe's choice is better)")
    _save(fig, path)


def plot_confusion(y_true, y_pred, path) -> None:
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=[0, 1],
        display_labels=CLASS_NAMES,
        ax=ax,
        colorbar=False,
        cmap="Blues",
    )
    ax.set_title("locked test: confusion matrix")
    _save(fig, path)


def plot_roc(y_true, prob_covid, path) -> None:
    fig, ax = plt.subplots(figsize=(4, 3.8))
    RocCurveDisplay.from_predictions(y_true, prob_covid, pos_label=1, name="ViT", ax=ax)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_title("locked test: ROC (COVID positive)")
    _save(fig, path)


def plot_patch_grid(image: np.ndarray, patch_size: int, path) -> None:
    """The image cut into the patches the model sees as tokens."""
    n = image.shape[0] // patch_size
    width, height = 7.5, 3.6
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(image, cmap="gray")
    for k in range(1, n):
        ax.axhline(k * patch_size - 0.5, color="yellow", lw=0.6)
        ax.axvline(k * patch_size - 0.5, color="yellow", lw=0.6)
    ax.set_title(f"{n}x{n} patches of {patch_size}px")
    ax.axis("off")
    # A square region (in inches), so the tiles are spaced alike both ways.
    left, right, bottom = 0.56, 0.95, 0.07
    top = bottom + (right - left) * width / height
    sub = fig.add_gridspec(
        n, n, left=left, right=right, bottom=bottom, top=top, wspace=0.08, hspace=0.08
    )
    for i, j in itertools.product(range(n), range(n)):
        a = fig.add_subplot(sub[i, j])
        tile = image[i * patch_size : (i + 1) * patch_size, j * patch_size : (j + 1) * patch_size]
        a.imshow(tile, cmap="gray", vmin=0, vmax=255)
        a.axis("off")
    _save(fig, path, tight=False)  # the tiles' square region is placed by hand


def _overlay(ax, image, heat, title):
    ax.imshow(image, cmap="gray")
    ax.imshow(
        heat,
        cmap="jet",
        alpha=0.45,
        extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5),
        interpolation="bilinear",
    )
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_head_maps(image: np.ndarray, maps: np.ndarray, title: str, path) -> None:
    """maps: (layers, heads, grid, grid) -> one panel per layer (rows) and head (columns)."""
    layers, heads = maps.shape[:2]
    fig, axes = plt.subplots(
        layers, heads + 1, figsize=(1.9 * (heads + 1), 1.9 * layers + 0.5), squeeze=False
    )
    for layer in range(layers):
        axes[layer][0].imshow(image, cmap="gray")
        axes[layer][0].set_title(f"layer {layer + 1}", fontsize=8)
        axes[layer][0].axis("off")
        for head in range(heads):
            _overlay(axes[layer][head + 1], image, maps[layer, head], f"head {head + 1}")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def plot_rollouts(images, maps, titles, path) -> None:
    """Attention rollout over each image (one column each)."""
    fig, axes = plt.subplots(2, len(images), figsize=(2.2 * len(images), 4.6), squeeze=False)
    for k, (image, heat, title) in enumerate(zip(images, maps, titles, strict=True)):
        axes[0][k].imshow(image, cmap="gray")
        axes[0][k].set_title(title, fontsize=7)
        axes[0][k].axis("off")
        _overlay(axes[1][k], image, heat, "rollout")
    _save(fig, path)


def plot_overlay(image: np.ndarray, heat: np.ndarray, title: str, path) -> None:
    """One image beside its attention heat map (used by prediction, one file per image)."""
    fig, axes = plt.subplots(1, 2, figsize=(4.4, 2.5))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("input", fontsize=8)
    axes[0].axis("off")
    _overlay(axes[1], image, heat, "attention rollout")
    fig.suptitle(title, fontsize=8)
    _save(fig, path)


def plot_cv_runs(runs: pd.DataFrame, cv: dict, path, shipped_test: float | None) -> None:
    """Held-out accuracy and MCC of every (fold, seed) run of the final recipe as dots, their
    mean with its cluster-bootstrap interval as a band, and the shipped model's locked test
    accuracy as a dotted line."""
    held = runs[(runs.recipe == "final") & (runs.part == "held_out")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("accuracy", "mcc"), strict=True):
        sns.stripplot(data=held, x="fold", y=metric, hue="seed", ax=ax, size=7, jitter=0.15)
        low, high = cv["ci95"].get(metric, (np.nan, np.nan))
        ax.axhspan(low, high, color="tab:blue", alpha=0.12, label="CV mean, 95% CI")
        ax.axhline(cv[metric], color="tab:blue", linewidth=1.2, label="CV mean")
        if metric == "accuracy" and shipped_test is not None:
            ax.axhline(
                shipped_test, color="tab:red", linestyle=":", label="shipped model, locked test"
            )
        ax.set(xlabel="held-out fold", ylabel=metric, title=f"held-out {metric} per run")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[1].get_legend().remove()
    axes[0].legend(handles, labels, fontsize=7, loc="lower right", title="seed / line")
    _save(fig, path)


def plot_reliability(sets: dict, path, temperature: float | None = None) -> None:
    """Reliability diagrams, one panel per set (name -> (labels, COVID probabilities before
    temperature scaling, after it)): in each of the ECE's equal-width bins
    (vitct.evaluation.metrics.calibration_bins), the mean predicted COVID probability against
    the share of COVID slices, before and after (empty bins left out), each labelled with its
    ECE; below, how many slices fall in each bin after."""
    fig, axes = plt.subplots(
        2,
        len(sets),
        figsize=(4.2 * len(sets), 5.4),
        squeeze=False,
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1]},
    )
    bins = CALIBRATION_BINS
    after = "after temperature scaling" + (f" (T = {temperature:.3g})" if temperature else "")
    for k, (name, (y_true, prob_raw, prob)) in enumerate(sets.items()):
        y_true = np.asarray(y_true, dtype=float)
        ax, ax_n = axes[0][k], axes[1][k]
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="calibrated")
        for label, p, style in (("before", prob_raw, "--"), (after, prob, "-")):
            p = np.asarray(p, dtype=float)
            which = calibration_bins(p, bins)
            counts = np.bincount(which, minlength=bins)
            used = counts > 0
            mean_prob = np.bincount(which, p, bins)[used] / counts[used]
            share = np.bincount(which, y_true, bins)[used] / counts[used]
            ece = expected_calibration_error(y_true, p, bins)
            ax.plot(mean_prob, share, marker="o", linestyle=style, label=f"{label}, ECE {ece:.3f}")
        ax.set(title=f"{name} (n = {len(y_true)})", xlim=(0, 1), ylim=(-0.02, 1.02))
        ax.legend(frameon=False, fontsize=7, loc="upper left")
        counts = np.bincount(calibration_bins(prob, bins), minlength=bins)  # after
        ax_n.bar(np.arange(bins) / bins, counts, width=1 / bins, align="edge", color="tab:grey")
        ax_n.set(xlabel="predicted COVID probability")
    axes[0][0].set_ylabel("share of COVID slices")
    axes[1][0].set_ylabel("slices (after)")
    _save(fig, path)


def plot_learning_curve(curve: pd.DataFrame, site: str, path) -> None:
    """Accuracy and ROC-AUC on the site's evaluation part against the number of its labelled
    slices the model was adapted with (95% intervals as whiskers), and the same models'
    locked-test accuracy minus the shipped model's, paired: what adapting buys there and costs
    here."""
    labels = [str(n) for n in curve["labelled site slices"]]
    x = np.arange(len(labels))
    fig, (ax, ax_in) = plt.subplots(1, 2, figsize=(10, 3.8))
    for metric, colour in (("accuracy", "tab:blue"), ("roc_auc", "tab:orange")):
        value = curve[f"site {metric}"].to_numpy(dtype=float)
        low = curve[f"site {metric}_low"].to_numpy(dtype=float)
        high = curve[f"site {metric}_high"].to_numpy(dtype=float)
        ax.errorbar(
            x, value, yerr=[value - low, high - value], marker="o", capsize=3, color=colour,
            label=metric.replace("roc_auc", "ROC-AUC"),
        )  # fmt: skip
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="a coin")
    ax.set(
        xticks=x, xticklabels=labels, ylim=(0.3, 1.02), xlabel="labelled site slices",
        title=f"on {site}'s evaluation part",
    )  # fmt: skip
    ax.legend(fontsize=8, loc="lower right")
    points = curve["in-source points"].to_numpy(dtype=float)
    low = np.nan_to_num(curve["in-source points low"].to_numpy(dtype=float))
    high = np.nan_to_num(curve["in-source points high"].to_numpy(dtype=float))
    ax_in.errorbar(
        x, points, yerr=[points - low, high - points], marker="o", capsize=3, color="tab:green",
        label="adapted minus shipped",
    )  # fmt: skip
    ax_in.axhline(0, color="black", linestyle="--", linewidth=1, label="the shipped model")
    # At least +-2 points shown, so that a change smaller than the noise does not look large.
    ax_in.set_ylim(min(low.min(), -2) - 0.5, max(high.max(), 2) + 0.5)
    ax_in.set(
        xticks=x, xticklabels=labels, xlabel="labelled site slices",
        ylabel="locked-test accuracy points", title="in-source: what adapting cost (paired)",
    )  # fmt: skip
    ax_in.legend(fontsize=8)
    for axis in (ax, ax_in):
        axis.grid(alpha=0.3)
    _save(fig, path)
