"""What a model file's header must hold: field names, types and ranges, checked on every load.

The checksum proves a header is the one that was written; this proves it is one that vitct can
use (a file written by other code, or a checksum recomputed after an edit, is still refused when
a field is missing, of the wrong type or out of range).
"""

from __future__ import annotations

import math
from dataclasses import fields

import jsonschema

from vitct.data.classes import CLASS_NAMES
from vitct.data.model_input import INTENSITIES, MASKS
from vitct.model.settings import ViTConfig

_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_SHARE = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}
_POSITIVE = {"type": "integer", "minimum": 1}
_TYPES = {int: "integer", float: "number", str: "string"}
# Ranges where the model's own checks (ViTConfig) do not reach: the rest are types only.
_MODEL_RANGES = {
    "image_size": {"minimum": 8},
    "in_channels": {"const": 1},
    "num_classes": {"const": len(CLASS_NAMES)},
    "patch_size": _POSITIVE,
    "embed_dim": _POSITIVE,
    "depth": _POSITIVE,
    "heads": _POSITIVE,
    "mlp_ratio": {"exclusiveMinimum": 0},
    "dropout": _SHARE,
    "attn_dropout": _SHARE,
    "drop_path": _SHARE,
}


def _model_config_schema() -> dict:
    props = {}
    for f in fields(ViTConfig):
        kind = _TYPES[type(f.default)]
        props[f.name] = {"type": kind, **_MODEL_RANGES.get(f.name, {})}
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


HEADER_SCHEMA = {
    "type": "object",
    "required": [
        "format",
        "format_version",
        "model_config",
        "preprocessing",
        "class_names",
        "weights_sha256",
        "header_sha256",
    ],
    "properties": {
        "format": {"type": "string"},
        "format_version": {"type": "integer"},
        "model_config": _model_config_schema(),
        "preprocessing": {
            "type": "object",
            "required": ["image_size", "mean", "std"],
            "properties": {
                "image_size": {"type": "integer", "minimum": 8},
                "mean": {"type": "number"},
                "std": {"type": "number", "exclusiveMinimum": 0},
                "grey": {"type": "string"},
                # absent in files from before these options: no mask, raw grey levels
                "mask": {"enum": list(MASKS)},
                "intensity": {"enum": list(INTENSITIES)},
                # absent in files from before DICOM input: trained on 8-bit slices
                "input": {
                    "type": "object",
                    "required": ["kind"],
                    "properties": {
                        "kind": {"enum": ["slices", "hounsfield", "mixed"]},
                        "window": {
                            "type": "array",
                            "items": {"type": "number"},
                            "minItems": 2,
                            "maxItems": 2,
                        },
                        "slice_rule": {"type": "string"},
                    },
                },
            },
        },
        "class_names": {"const": list(CLASS_NAMES)},
        "weights_sha256": _SHA256,
        "header_sha256": _SHA256,
        "data": {"type": "object", "properties": {"real_data": {"type": "boolean"}}},
        "training": {"type": "object"},
        "validation": {"type": "object"},
        # optional: files written before familiarity references (vitct.model.ood) have none
        "familiarity": {
            "type": "object",
            "required": ["method", "threshold", "val_flagged_share", "train_images"],
            "properties": {
                "method": {"type": "string"},
                # above zero: every score is divided by its threshold
                "threshold": {"type": "number", "exclusiveMinimum": 0},
                "grey_threshold": {"type": "number", "exclusiveMinimum": 0},
                "val_flagged_share": {"type": "number", "minimum": 0, "maximum": 1},
                "train_images": _POSITIVE,
            },
        },
        # optional: files written before temperature scaling (vitct.model.calibration) have
        # none and are read as T = 1
        "calibration": {
            "type": "object",
            "required": ["method", "temperature", "fitted_on", "images"],
            "properties": {
                "method": {"type": "string"},
                # above zero: a positive temperature keeps every predicted class
                "temperature": {"type": "number", "exclusiveMinimum": 0},
                "fitted_on": {"type": "string"},
                "images": _POSITIVE,
                "images_sha256": _SHA256,
                **{
                    f"{metric}_{when}": {"type": "number", "minimum": 0, "maximum": 1}
                    for metric in ("ece", "brier")
                    for when in ("before", "after")
                },
                "at_bound": {"type": "boolean"},
            },
        },
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(HEADER_SCHEMA)


def header_problem(meta: dict) -> str | None:
    """The first thing wrong with a parsed header (naming the field), or None."""
    for error in sorted(_VALIDATOR.iter_errors(meta), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path) or "header"
        return f"{where}: {error.message}"
    pre = meta["preprocessing"]
    for key in ("mean", "std"):
        if not math.isfinite(pre[key]):  # JSON as Python reads it allows NaN and Infinity
            return f"preprocessing.{key}: {pre[key]} is not a finite number"
    for key in ("threshold", "grey_threshold"):
        threshold = meta.get("familiarity", {}).get(key, 0.0)
        if not math.isfinite(threshold):
            return f"familiarity.{key}: {threshold} is not a finite number"
    temperature = meta.get("calibration", {}).get("temperature", 1.0)
    if not math.isfinite(temperature):
        return f"calibration.temperature: {temperature} is not a finite number"
    if pre["image_size"] != meta["model_config"]["image_size"]:
        return (
            f"preprocessing.image_size {pre['image_size']} differs from the model's "
            f"model_config.image_size {meta['model_config']['image_size']}"
        )
    try:
        ViTConfig(**meta["model_config"])
    except ValueError as e:
        return f"model_config: {e}"
    return None
