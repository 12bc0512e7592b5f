"""The model artifact: one safetensors file that describes itself.

safetensors holds tensors and a string-to-string header only, so loading a model file can never
run code from it (unlike a pickled checkpoint). The header carries the model config, the
preprocessing, class names, the training data's provenance and the final metrics as JSON.

The whole file is verified on every load: the header carries a sha256 of itself (which covers
the weights' sha256 it holds), the weights must match theirs, and the header's fields must pass
its schema (artifact_header). Any damage raises ArtifactError with one line; nothing that a
damaged file makes the reader raise escapes as another exception.

A model file may also carry its familiarity reference (vitct.model.ood): tensors named
familiarity.* beside the weights (covered by weights_sha256, kept out of the model's state dict)
and a `familiarity` header object. Files without one still load, with no reference.

It may carry a temperature too (vitct.model.calibration), a `calibration` header object that
every use of the file applies (`calibration_of`); files without one are read as T = 1.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, save

from vitct.atomic_files import write_output
from vitct.data.classes import CLASS_NAMES
from vitct.errors import UserError
from vitct.model.artifact_schema import header_problem
from vitct.model.calibration import UNCALIBRATED_NOTE, Calibration
from vitct.model.ood import TENSOR_PREFIX, Familiarity
from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT

FORMAT = "vitct-model"
# 2: the header holds weights_sha256, checked on every load; 3: and header_sha256 over itself
FORMAT_VERSION = 3


class ArtifactError(UserError, ValueError):
    """A model file that cannot be used; the message says why and what to do."""


def weights_sha256(state: dict) -> str:
    """Digest of every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def header_sha256(meta: dict) -> str:
    """Digest of the header's content (every field but this digest), whatever its layout."""
    content = {k: v for k, v in meta.items() if k != "header_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def save_artifact(
    path: str | Path,
    model: ViT,
    preprocessing: dict,
    familiarity: Familiarity | None = None,
    calibration: Calibration | None = None,
    **info,
) -> None:
    """Write weights plus a JSON header (model config, preprocessing, classes, extra info), and
    the familiarity reference and the calibration when given."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if calibration is not None:
        info["calibration"] = calibration.header()
    if familiarity is not None:
        for name, array in familiarity.tensors().items():
            state[name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
        info["familiarity"] = familiarity.header()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": model.cfg.to_dict(),
        "preprocessing": preprocessing,
        "class_names": list(CLASS_NAMES),
        "weights_sha256": weights_sha256(state),
        **info,
    }
    meta["header_sha256"] = header_sha256(meta)
    data = save(state, metadata={"vitct": json.dumps(meta, sort_keys=True)})
    write_output(path, lambda f: f.write(data))


def read_metadata(path: str | Path) -> dict:
    """The header of a model file, verified (checksum and schema) without reading the weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # a damaged file can make the reader raise anything: refuse it
        raise ArtifactError(f"'{path}' is not a readable vitct model file ({_one_line(e)}).") from e
    if "vitct" not in header:
        raise ArtifactError(f"'{path}' is a safetensors file but not a vitct model.")
    try:
        meta = json.loads(header["vitct"])
    except (json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError(f"'{path}' has a corrupt header: {_one_line(e)}") from e
    if not isinstance(meta, dict):
        raise ArtifactError(f"'{path}' has a corrupt header: not a JSON object.")
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"'{path}' is format {_one_line(meta.get('format'))} "
            f"v{_one_line(meta.get('format_version'))}, this vitct reads {FORMAT} "
            f"v{FORMAT_VERSION}: retrain with this version or use the matching one."
        )
    if meta.get("header_sha256") != header_sha256(meta):
        raise ArtifactError(
            f"'{path}' header does not match the sha256 it carries: the file was altered or "
            "damaged after it was written; use an intact copy or retrain."
        )
    problem = header_problem(meta)
    if problem:
        raise ArtifactError(f"'{path}' has an invalid header ({_one_line(problem)}); retrain.")
    return meta


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> tuple[ViT, dict]:
    """Model (in eval mode) and its metadata; raises ArtifactError on any mismatch."""
    model, meta, _ = load_with_familiarity(path, device)
    return model, meta


def load_with_familiarity(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[ViT, dict, Familiarity | None]:
    """As load_artifact, plus the file's familiarity reference (None in a file without one)."""
    meta = read_metadata(path)
    model = ViT(ViTConfig(**meta["model_config"]))  # the schema admitted it
    try:
        state = load(Path(path).read_bytes())
    except Exception as e:  # as in read_metadata: any failure to read is a damaged file
        raise ArtifactError(f"'{path}' weights cannot be read (corrupt?): {_one_line(e)}") from e
    # safetensors cannot run code, but bytes can still change after writing (a bad copy, an
    # edit): a changed model must fail loudly, never predict quietly with other weights.
    if weights_sha256(state) != meta["weights_sha256"]:
        raise ArtifactError(
            f"'{path}' weights do not match the sha256 in its header: the file was altered or "
            "damaged after it was written; use an intact copy or retrain."
        )
    reference = {k: state.pop(k).numpy() for k in list(state) if k.startswith(TENSOR_PREFIX)}
    familiarity = _familiarity(path, meta, reference, model.cfg.embed_dim)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ArtifactError(
            f"'{path}' weights do not fit its own config (corrupt?): {_one_line(e)}"
        ) from e
    return model.to(device).eval(), meta, familiarity


def carried_over(meta: dict) -> dict:
    """What a model file made from this one's model (an adapted model) keeps of its header, as
    save_artifact's keyword arguments: the training settings, the validation metrics and the
    calibration (not refitted: the new data has no validation split)."""
    kept = {k: meta[k] for k in ("training", "validation") if k in meta}
    if "calibration" in meta:
        kept["calibration"] = Calibration.from_header(meta["calibration"])
    return kept


def calibration_of(meta: dict) -> dict:
    """The verified header's calibration: its `calibration` object, or for a file written before
    temperature scaling {"method": "none", "temperature": 1.0, "note": ...}."""
    if "calibration" in meta:
        return dict(meta["calibration"])
    return {"method": "none", "temperature": 1.0, "note": UNCALIBRATED_NOTE}


def _familiarity(path, meta: dict, tensors: dict, dim: int) -> Familiarity | None:
    if "familiarity" not in meta and not tensors:
        return None  # a file written before familiarity references, or without one
    try:
        reference = Familiarity.from_parts(meta["familiarity"], tensors)
    except KeyError as e:
        raise ArtifactError(
            f"'{path}' has an incomplete familiarity reference ({e}); retrain."
        ) from None
    shapes = [(reference.features, dim)]
    if reference.grey is not None:
        shapes.append((reference.grey, len(reference.grey.mean)))
    if any(p.mean.shape != (n,) or p.precision.shape != (n, n) for p, n in shapes):
        raise ArtifactError(
            f"'{path}' familiarity reference does not fit the model's {dim} features; retrain."
        )
    return reference


def _one_line(value, limit: int = 300) -> str:
    """A value or error as one short line (messages end up on a console line of their own)."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
