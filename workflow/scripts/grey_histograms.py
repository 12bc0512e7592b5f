"""Each scan's grey-level histogram at its own resolution, for the grey-level baseline (the
model's downscaled images have lost the fine spread of grey levels)."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from vitct import step
from vitct.data import open_grey, save_cache
from vitct.intensity import grey_histograms


def main(snakemake):
    root = Path(json.loads(Path(snakemake.input.receipt).read_text())["root"])
    manifest = pd.read_csv(snakemake.input.manifest, sep="\t", keep_default_na=False)
    paths = tqdm(manifest.path, desc="grey levels", mininterval=5)
    histograms = grey_histograms(np.asarray(open_grey(root / path)) for path in paths)
    save_cache(
        snakemake.output.histograms,
        {"paths": manifest.path.to_numpy(dtype=str), "histograms": histograms},
    )
    logging.info("grey-level histograms of %d scans at their own resolution", len(histograms))


step.run(snakemake, main)  # noqa: F821
