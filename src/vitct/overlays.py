"""Config overlays: `--configfile base.yaml overlay.yaml` merges the overlay into the base
(Snakemake merges mappings key by key, in order), so an overlay states only what it changes.
A key an overlay sets to null is removed, which lets it drop what the file below it adds, e.g.
an ablation variant that means nothing for its final model (`no_stochastic_depth: null`)."""

from __future__ import annotations


def remove_nulled_keys(config: dict) -> None:
    """Delete, in place and at every depth, the keys whose value is None. No setting takes
    null, so a None can only be an overlay's removal."""
    for key in [k for k, v in config.items() if v is None]:
        del config[key]
    for value in config.values():
        if isinstance(value, dict):
            remove_nulled_keys(value)
