"""Score one cross-validation run: its held-out fold, the locked test split and every external
set (evaluation.external), each a `part` of its predictions, with the share of each part that
the model flags as unlike its training images."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from vitct import step
from vitct.artifact import load_with_familiarity
from vitct.crossval import HELD_OUT, TEST, external_part
from vitct.data import load_cache, load_splits
from vitct.external import external_groups
from vitct.familiarity import flagged_share, score_and_flag
from vitct.inference import predict_with_features
from vitct.metrics import binary_metrics
from vitct.outputs import write_text


def main(snakemake):
    fold, seed = snakemake.params.fold, snakemake.params.seed
    model, meta, familiarity = load_with_familiarity(snakemake.input.model)
    cache = load_splits(snakemake.input.cache, snakemake.input.folds, fold=fold)
    table = pd.read_csv(snakemake.input.folds, sep="\t", keep_default_na=False)
    group_of = dict(zip(table.path, table.near_duplicate_group, strict=True))
    pre = meta["preprocessing"]
    train = json.loads(Path(snakemake.input.train_metrics).read_text())
    metrics = {"fold": fold, "seed": seed, "best_epoch": train["best_epoch"], "flagged_share": {}}
    scored = [
        (part, *(cache.get(f"{split}_{k}") for k in ("x", "y", "paths", "grey")))
        for part, split in ((HELD_OUT, "val"), (TEST, "test"))
    ]
    groups = [[group_of[p] for p in paths] for _, _, _, paths, _ in scored]
    for name, path in zip(snakemake.params.external, snakemake.input.external, strict=True):
        ext = load_cache(path)  # scored as it is, never trained on
        scored.append(
            (external_part(name), ext["x"], ext["y"], ext["paths"], ext.get("histograms"))
        )
        groups.append(external_groups(ext, snakemake.params.threshold))
    parts = []
    for (part, x, y, paths, grey), group in zip(scored, groups, strict=True):
        prob, features = predict_with_features(model, x, pre["mean"], pre["std"])
        metrics[part] = binary_metrics(y, prob)
        # the held-out fold is the one the threshold came from: about 5% there by design
        unfamiliar = score_and_flag(familiarity, features, grey)[1]
        metrics["flagged_share"][part] = flagged_share(unfamiliar)
        parts.append(
            pd.DataFrame(
                {
                    "fold": fold,
                    "seed": seed,
                    "part": part,
                    "path": paths,
                    "label": y,
                    "prob_covid": np.round(prob, 6),
                    "near_duplicate_group": group,
                    "unfamiliar": unfamiliar,
                }
            )
        )
    write_text(snakemake.output.predictions, pd.concat(parts).to_csv(sep="\t", index=False))
    write_text(snakemake.output.metrics, json.dumps(metrics, indent=2, sort_keys=True))


step.run(snakemake, main)  # noqa: F821
