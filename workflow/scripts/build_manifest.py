"""One row per usable image (hash, size, colour mode, duplicates), one per rejected file."""

import json
import logging
from pathlib import Path

from vitct.atomic_files import write_text
from vitct.data.manifest import build_manifest, colour_mode_table
from vitct.pipeline import harness


def main(snakemake):
    root = json.loads(Path(snakemake.input.receipt).read_text())["root"]
    # The config key that named the folder, for the messages: an external set has its own.
    manifest, rejects = build_manifest(root, setting=snakemake.params.setting)
    write_text(snakemake.output.manifest, manifest.to_csv(sep="\t", index=False))
    write_text(snakemake.output.rejects, rejects.to_csv(sep="\t", index=False))
    logging.info(
        "%d images, %d exact duplicates, %d rejected",
        len(manifest),
        (manifest.duplicate_of != "").sum(),
        len(rejects),
    )
    for row in rejects.itertuples():
        logging.warning("rejected %s: %s", row.path, row.reason)
    logging.info("colour modes per class:\n%s", colour_mode_table(manifest))


harness.run(snakemake, main)  # noqa: F821
