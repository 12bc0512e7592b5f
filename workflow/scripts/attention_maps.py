"""Per-layer, per-head attention maps, attention rollout and the patch grid of the shipped model
on locked test images."""

import numpy as np
import pandas as pd

from vitct.data.cache import load_training_cache, rows_of
from vitct.data.classes import CLASS_NAMES
from vitct.evaluation.figures import plot_head_maps, plot_patch_grid, plot_rollouts
from vitct.evaluation.scoring import TEST, read_predictions
from vitct.model.artifact import load_artifact
from vitct.model.attention import attention_weights, patch_scores, rollout, to_grid
from vitct.pipeline import harness


def pick_images(predictions: pd.DataFrame, n: int) -> list[int]:
    """Alternate correctly and wrongly classified test images, so both kinds are shown."""
    correct = ((predictions.prob_covid >= 0.5).astype(int) == predictions.label).to_numpy()
    right, wrong = list(np.flatnonzero(correct)), list(np.flatnonzero(~correct))
    picked = []
    while len(picked) < n and (right or wrong):
        for pool in (right, wrong):
            if pool and len(picked) < n:
                picked.append(pool.pop(0))
    return picked


def main(snakemake):
    model, meta = load_artifact(snakemake.input.model)
    cache = load_training_cache(snakemake.input.cache, snakemake.params.prefixes)
    predictions = read_predictions(snakemake.input.predictions)
    predictions = predictions[predictions.part == TEST].reset_index(drop=True)
    pre, cfg = meta["preprocessing"], model.cfg
    idx = pick_images(predictions, snakemake.params.n_images)
    picked = predictions.iloc[idx]
    images = cache["x"][rows_of(cache["paths"], picked.path.tolist(), snakemake.input.cache)]
    weights = attention_weights(model, images, pre["mean"], pre["std"])
    has_cls = cfg.pooling == "cls"
    heads = to_grid(patch_scores(np.stack(weights, axis=1), has_cls), cfg.grid_size)
    titles = [
        f"{r.path}\ntrue {CLASS_NAMES[r.label]}, predicted "
        f"{CLASS_NAMES[int(r.prob_covid >= 0.5)]} (p={r.prob_covid:.2f})"
        for r in picked.itertuples()
    ]
    for k, path in enumerate(snakemake.output.heads):
        if k < len(idx):
            plot_head_maps(images[k], heads[k], titles[k], path)
        else:  # fewer test images than maps asked for: say so in the figure
            plot_head_maps(images[0] * 0, heads[0] * 0, "no further test image", path)
    plot_rollouts(
        images, to_grid(rollout(weights, has_cls), cfg.grid_size), titles, snakemake.output.rollout
    )
    plot_patch_grid(images[0], cfg.patch_size, snakemake.output.patch_grid)


harness.run(snakemake, main)  # noqa: F821
