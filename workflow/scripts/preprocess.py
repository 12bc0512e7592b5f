"""Decode every image of a data set once: its model input (grey, masked, standardised and
resized as the preprocessing says), a thumbnail of the whole slice for near-duplicate search and
the pixel baseline, and the grey-level histogram of the slice as decoded (the grey-level
baseline and the out-of-distribution score). Training and scoring read these arrays and never
decode an image."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from vitct.data.cache import save_cache
from vitct.data.duplicates import THUMBNAIL_SIZE
from vitct.data.histograms import grey_histograms
from vitct.data.images import open_grey, square
from vitct.data.model_input import model_input
from vitct.data.nifti import source_at
from vitct.pipeline import harness


def main(snakemake):
    root = Path(json.loads(Path(snakemake.input.receipt).read_text())["root"])
    manifest = pd.read_csv(snakemake.input.manifest, sep="\t", keep_default_na=False)
    size, mask, intensity = (snakemake.params[k] for k in ("image_size", "mask", "intensity"))
    images, thumbnails, histograms = [], [], []
    for path in tqdm(manifest.path, desc="preprocess", mininterval=5):
        grey = open_grey(source_at(root, path))  # a file, or a NIfTI volume's slice
        images.append(model_input(grey, size, mask, intensity))
        # The thumbnails (near-duplicate search, 1-NN baseline) are of the whole slice, so the
        # split is the same whatever mask or intensity the model's input has.
        thumbnails.append(square(grey, THUMBNAIL_SIZE))
        # and the grey levels as decoded, for the familiarity reference (vitct.model.ood)
        histograms.append(grey_histograms([np.asarray(grey)])[0])  # as data.load_input
    save_cache(
        snakemake.output.cache,
        {
            "x": np.stack(images),
            "y": manifest.label.to_numpy(dtype=np.int64),
            "paths": manifest.path.to_numpy(dtype=str),
            "thumbnails": np.stack(thumbnails),
            "histograms": np.stack(histograms),
        },
    )
    logging.info(
        "cached %d images of %dx%d (mask %s, intensity %s)",
        len(images),
        size,
        size,
        mask,
        intensity,
    )


harness.run(snakemake, main)  # noqa: F821
