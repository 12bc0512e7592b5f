"""The model artifact: one safetensors file that describes itself.

safetensors holds tensors and a string-to-string header only, so loading a model file can never
run code from it (unlike a pickled checkpoint). The header carries the model config, the
preprocessing, class names, the training data's provenance and the final metrics as JSON.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vitct.data import CLASS_NAMES
from vitct.model import ViT
from vitct.settings import ViTConfig

FORMAT = "vitct-model"
FORMAT_VERSION = 2  # 2: the header holds weights_sha256, checked on every load


class ArtifactError(ValueError):
    """A model file that cannot be used; the message says why and what to do."""


def weights_sha256(state: dict) -> str:
    """Digest of every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_artifact(path: str | Path, model: ViT, preprocessing: dict, **info) -> None:
    """Write weights plus a JSON header (model config, preprocessing, classes, extra info)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": model.cfg.to_dict(),
        "preprocessing": preprocessing,
        "class_names": list(CLASS_NAMES),
        "weights_sha256": weights_sha256(state),
        **info,
    }
    save_file(state, str(path), metadata={"vitct": json.dumps(meta, sort_keys=True)})


def read_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"'{path}' is not a readable vitct model file ({e}).") from e
    if "vitct" not in header:
        raise ArtifactError(f"'{path}' is a safetensors file but not a vitct model.")
    try:
        meta = json.loads(header["vitct"])
    except json.JSONDecodeError as e:
        raise ArtifactError(f"'{path}' has a corrupt header: {e}") from e
    if not isinstance(meta, dict):
        raise ArtifactError(f"'{path}' has a corrupt header: not a JSON object.")
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"'{path}' is format {meta.get('format')} v{meta.get('format_version')}, this vitct "
            f"reads {FORMAT} v{FORMAT_VERSION}: retrain with this version or use the matching one."
        )
    return meta


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> tuple[ViT, dict]:
    """Model (in eval mode) and its metadata; raises ArtifactError on any mismatch."""
    meta = read_metadata(path)
    try:
        model = ViT(ViTConfig(**meta["model_config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"'{path}' has an invalid model config in its header: {e}") from e
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ArtifactError(f"'{path}' weights cannot be read (corrupt?): {e}") from e
    # safetensors cannot run code, but bytes can still change after writing (a bad copy, an
    # edit): a changed model must fail loudly, never predict quietly with other weights.
    if weights_sha256(state) != meta.get("weights_sha256"):
        raise ArtifactError(
            f"'{path}' weights do not match the sha256 in its header: the file was altered or "
            "damaged after it was written; use an intact copy or retrain."
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"'{path}' weights do not fit its own config (corrupt?): {e}") from e
    return model.to(device).eval(), meta
