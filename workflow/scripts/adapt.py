"""Adapt the shipped model to the adaptation site with n slices drawn by group from the site's
adaptation pool (one point of the learning curve): fine-tuning its last layers on them, or
training the final recipe again on the training images and them together (pooled). The
site's evaluation part, which the score step reads, is never drawn from."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from vitct.atomic_files import write_text
from vitct.data.cache import load_cache, load_training_cache, rows_of
from vitct.data.site import adaptation_draw
from vitct.model.artifact import carried_over, load_with_familiarity, save_artifact
from vitct.model.settings import ViTConfig
from vitct.pipeline import harness
from vitct.training.adapt import finetune
from vitct.training.run import train_run
from vitct.training.settings import TrainConfig


def with_drawn(cache: dict, table: pd.DataFrame, site_cache: dict, rows, draw, site: str):
    """The training cache and partition with the drawn site slices added as training images of
    a source named after the site (their own groups: the site's never meet the others')."""
    prefix = f"{site}/"
    added = pd.DataFrame(
        {
            "path": prefix + draw.path.to_numpy(),
            "label": draw.label.to_numpy(),
            "class_dir": ["COVID" if y else "non-COVID" for y in draw.label],
            "near_duplicate_group": draw.near_duplicate_group.to_numpy()
            + table.near_duplicate_group.max()
            + 1,
            "source": site,
            "test": False,
            "fold": 0,
        }
    )
    combined = {
        key: np.concatenate(
            [
                cache[key],
                np.char.add(prefix, site_cache[key][rows])
                if key == "paths"
                else site_cache[key][rows],
            ]
        )
        for key in cache
    }
    return combined, pd.concat([table, added], ignore_index=True)


def main(snakemake):
    params, inputs = snakemake.params, snakemake.input
    adaptation, run = params.adaptation, params.run
    shipped = json.loads(Path(inputs.shipped).read_text())
    site = pd.read_csv(inputs.site_split, sep="\t", keep_default_na=False)
    draw = adaptation_draw(site, run["n"], params.seed + run["draw"])
    site_cache = load_cache(inputs.site_cache)
    rows = rows_of(site_cache["paths"], draw.path.tolist(), inputs.site_cache)
    record = {
        "site": params.site,
        "method": run["method"],
        "slices": int(len(draw)),
        "draw": run["draw"],
        "classes": {str(k): int(v) for k, v in draw.label.value_counts().sort_index().items()},
    }
    if run["method"] == "finetune":
        model, meta, reference = load_with_familiarity(inputs.model)
        pre = meta["preprocessing"]
        settings = {k: adaptation[k] for k in ("epochs", "lr", "trainable")}
        losses = finetune(
            model,
            site_cache["x"][rows],
            site_cache["y"][rows],
            pre["mean"],
            pre["std"],
            seed=params.seed + run["draw"],
            label_smoothing=shipped["training"]["label_smoothing"],
            **settings,
        )
        record.update(settings)
        history = pd.DataFrame({"epoch": range(1, len(losses) + 1), "train_loss": losses})
        metrics = {"best_epoch": len(losses), "epochs_run": len(losses)}
        save_artifact(
            snakemake.output.model,
            model,
            preprocessing=pre,
            familiarity=reference,  # the shipped model's: the flag is not refitted
            data={**meta["data"], "adaptation": record},
            **carried_over(meta),
        )
    else:  # pooled: the final recipe trained again with the drawn slices among its images
        table = pd.read_csv(inputs.partition, sep="\t", keep_default_na=False)
        cache, table = with_drawn(
            load_training_cache(inputs.caches, params.prefixes), table, site_cache, rows, draw,
            params.site,
        )  # fmt: skip
        trained = train_run(
            cache,
            table,
            "all",
            params.split,
            ViTConfig.from_dict(shipped["model"]),
            TrainConfig.from_dict(shipped["training"]),
        )
        history = trained.history
        metrics = {"best_epoch": trained.best["epoch"], "epochs_run": len(history)}
        _, meta, _ = load_with_familiarity(inputs.model)
        save_artifact(
            snakemake.output.model,
            trained.model,
            preprocessing={**meta["preprocessing"], "mean": trained.mean, "std": trained.std},
            familiarity=trained.reference,
            calibration=trained.calibration,
            training=shipped["training"],
            data={**meta["data"], "adaptation": record},
        )
    metrics.update(
        {
            "recipe": params.recipe,
            "fold": params.fold,
            "seed": params.seed,
            "adaptation": record,
            "adapted_on": draw.path.tolist(),
            "model": shipped["model"],
            "training": shipped["training"],
            "chosen": shipped.get("chosen"),
            "parameters": shipped["parameters"],
            "images": {"train": int(len(draw)), "val": 0},
        }
    )
    write_text(snakemake.output.metrics, json.dumps(metrics, indent=2, sort_keys=True))
    write_text(snakemake.output.history, history.to_csv(sep="\t", index=False, float_format="%.6g"))


harness.run(snakemake, main)  # noqa: F821
