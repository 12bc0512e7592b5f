"""Decode every image once: grey, resized, cached as uint8 arrays per split."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from vitct import step
from vitct.data import load_grey, save_cache
from vitct.split import SPLITS


def main(snakemake):
    root = Path(json.loads(Path(snakemake.input.receipt).read_text())["root"])
    table = pd.read_csv(snakemake.input.split, sep="\t", keep_default_na=False)
    size = snakemake.params.image_size
    arrays = {}
    for split in SPLITS:
        rows = table[table.split == split]
        images = [load_grey(root / p, size) for p in tqdm(rows.path, desc=split, mininterval=2)]
        arrays[f"{split}_x"] = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
        arrays[f"{split}_y"] = rows.label.to_numpy(dtype=np.int64)
        arrays[f"{split}_paths"] = rows.path.to_numpy(dtype=str)
    train = arrays["train_x"].astype(np.float64) / 255.0
    arrays["mean"], arrays["std"] = np.float64(train.mean()), np.float64(train.std())
    save_cache(snakemake.output.cache, arrays)
    logging.info("cached %s images of %dx%d (train mean %.4f, std %.4f)",
                 {s: len(arrays[f"{s}_x"]) for s in SPLITS}, size, size,
                 arrays["mean"], arrays["std"])  # fmt: skip


step.run(snakemake, main)  # noqa: F821
