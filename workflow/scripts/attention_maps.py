"""Per-layer, per-head attention maps, attention rollout and the patch grid on test images."""

import numpy as np
import pandas as pd

from vitct import step
from vitct.artifact import load_artifact
from vitct.attention import attention_weights, patch_scores, rollout, to_grid
from vitct.data import load_splits
from vitct.figures import plot_head_maps, plot_patch_grid, plot_rollouts


def pick_images(predictions: pd.DataFrame, n: int) -> list[int]:
    """Alternate correctly and wrongly classified test images, so both kinds are shown."""
    right = list(np.flatnonzero(predictions.correct.to_numpy()))
    wrong = list(np.flatnonzero(~predictions.correct.to_numpy()))
    picked = []
    while len(picked) < n and (right or wrong):
        for pool in (right, wrong):
            if pool and len(picked) < n:
                picked.append(pool.pop(0))
    return picked


def main(snakemake):
    model, meta = load_artifact(snakemake.input.model)
    cache = load_splits(snakemake.input.cache, snakemake.input.split)
    predictions = pd.read_csv(snakemake.input.predictions)
    pre, cfg = meta["preprocessing"], model.cfg
    idx = pick_images(predictions, snakemake.params.n_images)
    images = cache["test_x"][idx]
    weights = attention_weights(model, images, pre["mean"], pre["std"])
    has_cls = cfg.pooling == "cls"
    heads = to_grid(patch_scores(np.stack(weights, axis=1), has_cls), cfg.grid_size)
    titles = [
        f"{r.path}\ntrue {r.label}, predicted {r.predicted} (p={r.prob_covid:.2f})"
        for r in predictions.iloc[idx].itertuples()
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


step.run(snakemake, main)  # noqa: F821
