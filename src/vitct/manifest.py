"""The manifest: one row per image, and a rejects table for files that cannot be used.

Nothing is dropped silently: every file under a class folder is either a manifest row or a
rejects row with the reason.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from vitct.data import CLASS_DIRS, label_of

MANIFEST_COLUMNS = [
    "path",
    "class_dir",
    "label",
    "sha256",
    "width",
    "height",
    "mode",
    "duplicate_of",
]
REJECT_COLUMNS = ["path", "class_dir", "reason"]


class DataLayoutError(ValueError):
    """The data folder does not have the Kaggle layout; the message says what to do."""


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _inspect(path: Path) -> tuple[dict | None, str | None]:
    """Decode one file fully; return its row or the reason it cannot be used."""
    if path.stat().st_size == 0:
        return None, "empty file (0 bytes)"
    try:
        with Image.open(path) as img:
            img.load()  # decodes every pixel: truncated files fail here, not in training
            width, height, mode = img.size[0], img.size[1], img.mode
    except UnidentifiedImageError:
        return None, "not an image (no decoder recognises it)"
    except Image.DecompressionBombError as e:
        return None, f"image too large: {e}"
    except (OSError, SyntaxError, ValueError) as e:
        return None, f"cannot decode: {e}"
    return {"width": width, "height": height, "mode": mode}, None


def _class_files(root: Path, class_dir: str) -> list[Path]:
    folder = root / class_dir
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DataLayoutError(
            f"class folder '{folder}' is missing (found folders: {found or 'none'}). "
            f"The data folder must hold {' and '.join(repr(c) for c in CLASS_DIRS)} sub-folders "
            "as the Kaggle archive unpacks; point dataset.path at the folder that holds them."
        )
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataLayoutError(
            f"class folder '{folder}' is empty: no images of class {class_dir}. "
            "Add the images, or fix dataset.path."
        )
    return files


def build_manifest(root: str | Path, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Walk root/COVID and root/non-COVID; return (manifest, rejects)."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"data folder '{root}' does not exist; check dataset.path.")
    files = [(c, p) for c in CLASS_DIRS for p in _class_files(root, c)]
    rows, rejects = [], []
    for class_dir, path in tqdm(files, desc="manifest", disable=not progress, mininterval=2):
        info, reason = _inspect(path)
        rel = str(path.relative_to(root))
        if reason:
            rejects.append({"path": rel, "class_dir": class_dir, "reason": reason})
            continue
        rows.append(
            {
                "path": rel,
                "class_dir": class_dir,
                "label": label_of(class_dir),
                "sha256": sha256_of(path),
                **info,
            }
        )
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS[:-1])
    manifest, conflicts = _mark_duplicates(manifest)
    rejects = pd.concat([pd.DataFrame(rejects, columns=REJECT_COLUMNS), conflicts])
    for class_dir in CLASS_DIRS:
        if not (manifest["class_dir"] == class_dir).any():
            raise DataLayoutError(
                f"no usable image in class folder '{class_dir}': all its files were rejected "
                f"({len(rejects[rejects.class_dir == class_dir])} rejects, see the rejects table)."
            )
    return manifest.reset_index(drop=True), rejects.reset_index(drop=True)


def _mark_duplicates(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Point each exact copy at the first file with the same bytes.

    The same bytes under both class folders cannot have a true label: both copies are rejected.
    """
    labels_per_hash = manifest.groupby("sha256")["label"].nunique()
    conflicting = manifest["sha256"].isin(labels_per_hash[labels_per_hash > 1].index)
    conflicts = manifest.loc[conflicting, ["path", "class_dir"]].assign(
        reason="the same image is in both class folders; its label is unknown"
    )
    manifest = manifest.loc[~conflicting].copy()
    first = manifest.groupby("sha256")["path"].transform("first")
    manifest["duplicate_of"] = first.where(first != manifest["path"], "")
    return manifest, conflicts


def colour_mode_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Count of files per class and colour mode (the real data's modes leak the label)."""
    return pd.crosstab(manifest["class_dir"], manifest["mode"])
