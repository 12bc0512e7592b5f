"""The shortcut meter: the grey-level histogram classifier refitted on what the final model sees
(its preprocessed image cache), fitted on train+validation, scored on the locked test split and
on each external set's cache of the same preprocessing."""

import json
import logging
from pathlib import Path

import pandas as pd

from vitct import step
from vitct.data import load_cache, rows_of
from vitct.external import external_groups, seen_rows
from vitct.intensity import HISTOGRAM_BINS, shortcut_meter
from vitct.outputs import write_text


def main(snakemake):
    params = snakemake.params
    cache = load_cache(snakemake.input.cache)
    split = pd.read_csv(snakemake.input.split, sep="\t", keep_default_na=False)
    seen = seen_rows(cache, split)
    test = split[split.split == "test"]
    rows = rows_of(cache["paths"], test.path.tolist(), snakemake.input.cache)
    # The test split's groups are the split's own (as in evaluate), an external set's its own.
    sets = {"test": (cache["x"][rows], cache["y"][rows], test.near_duplicate_group.to_numpy())}
    for name, path in zip(params.external, snakemake.input.external, strict=True):
        external = load_cache(path)
        groups = external_groups(external, params.threshold)
        sets[f"external/{name}"] = (external["x"], external["y"], groups)
    scored = shortcut_meter(cache["x"][seen], cache["y"][seen], sets, params.seed, params.bootstrap)
    result = {
        "model_input": Path(snakemake.input.cache).name,
        "fitted_on": "train+val",
        "n_fitted": len(seen),
        "histogram_bins": HISTOGRAM_BINS,
        "test": scored["test"],
        "external": {name: scored[f"external/{name}"] for name in params.external},
    }
    write_text(snakemake.output.meter, json.dumps(result, indent=2, sort_keys=True))
    for name, metrics in scored.items():
        logging.info(
            "shortcut meter on %s: grey-level accuracy %.4f of the model's input (n = %d)",
            name,
            metrics["accuracy"],
            metrics["n"],
        )


step.run(snakemake, main)  # noqa: F821
