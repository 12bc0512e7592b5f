"""The manifest: one row per image, and a rejects table for files that cannot be used.

Nothing is dropped silently: every file under a class folder is either a manifest row or a
rejects row with the reason, and so is every file of a folder beside them (Pneumonia/, say).
Hidden files (a name, or a folder in its path, starting with a dot: .DS_Store, macOS ._ copies,
.ipynb_checkpoints/) are rejected too, with the reason, rather than left out without a word: a
slice named with a leading dot is otherwise invisible in a listing and lost. Hidden folders at
the top of the data folder (.cache/, and __MACOSX/ of a zip made on a Mac) are no part of it.

A file is read as the model would read it (vitct.data.images.read_slice), so one that
preprocessing or `vitct predict` would refuse is refused here, with the same reason: one that
does not decode, is outside the size policy, is mostly transparent or has several frames, or is
no CT slice at all (blank, colour, a strip: vitct.data.content). What decoding says of a file it
uses all the same (a partly transparent one) is logged as a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import pandas as pd
from PIL import UnidentifiedImageError
from tqdm import tqdm

from vitct.data.classes import CLASS_DIRS, label_of
from vitct.data.dicom import DicomError
from vitct.data.images import ImagePolicyError, read_slice
from vitct.data.nifti import VolumeSlice, is_nifti, name_of, volume_slices
from vitct.data.series import choose_slices
from vitct.errors import UserError

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "path",
    "class_dir",
    "label",
    "sha256",
    "width",
    "height",
    "mode",
    "patient",  # a hash of the DICOM header's patient, "" for other files
    "series",  # a hash of the DICOM header's series, "" for other files
    "duplicate_of",
]
REJECT_COLUMNS = ["path", "class_dir", "reason"]


class DataLayoutError(UserError, ValueError):
    """The data folder does not have the Kaggle layout; the message says what to do."""


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def hidden_reason(relative: Path) -> str | None:
    """Why a file at this path (relative to its class or other folder) is hidden, or None."""
    if relative.name.startswith("."):
        return (
            "hidden file: its name starts with a dot, as system files do (.DS_Store, a macOS ._ "
            "copy); rename it without the leading dot to use it"
        )
    folder = next((part for part in relative.parts[:-1] if part.startswith(".")), None)
    if folder:
        return (
            f"hidden file: it is in the hidden folder {folder}/ (a name starting with a dot); "
            "move it out, or rename the folder without the leading dot to use it"
        )
    return None


def _inspect(path: Path | VolumeSlice, rel: str) -> tuple[dict | None, str | None]:
    """Decode one file (or a volume's slice) fully; return its row or the reason it cannot be
    used."""
    if not isinstance(path, VolumeSlice):
        if path.is_symlink() and not path.exists():
            return None, f"broken link: its target '{os.readlink(path)}' does not exist"
        if path.stat().st_size == 0:
            return None, "empty file (0 bytes)"
    try:
        # Decodes every pixel: truncated files fail here, not in training. The grey conversion
        # and the content check too, so an image that preprocessing would refuse is refused
        # here, with its reason.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = read_slice(path)
    except UnidentifiedImageError:
        return None, "not an image (no decoder recognises it)"
    except (ImagePolicyError, DicomError) as e:
        return None, str(e)
    except (OSError, SyntaxError, ValueError) as e:
        return None, f"cannot decode: {e}"
    for warning in caught:  # used all the same: said in the log
        log.warning("%s: %s", rel, warning.message)
    width, height = image.image.size  # as shown (upright)
    info = {"width": width, "height": height, "mode": image.mode, "patient": image.patient}
    return info | {"series": image.dicom.series if image.dicom else "", "dicom": image.dicom}, None


def _class_files(root: Path, class_dir: str, setting: str) -> list[Path]:
    folder = root / class_dir
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DataLayoutError(
            f"class folder '{folder}' is missing (found folders: {found or 'none'}). "
            f"The data folder must hold {' and '.join(repr(c) for c in CLASS_DIRS)} sub-folders "
            f"as the Kaggle archive unpacks; point {setting} at the folder that holds them."
        )
    # Broken links and hidden files too: they get a rejects row, not silence.
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() or (p.is_symlink() and not p.exists())
    )
    if not files:
        raise DataLayoutError(
            f"class folder '{folder}' is empty: no images of class {class_dir}. "
            f"Add the images, or fix {setting}."
        )
    return files


def build_manifest(
    root: str | Path, progress: bool = True, setting: str = "dataset.path"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Walk root/COVID and root/non-COVID; return (manifest, rejects). `setting` is the config
    key that named the folder, for the messages (an external set's own key)."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"data folder '{root}' does not exist; check {setting}.")
    files = [(c, p) for c in CLASS_DIRS for p in _class_files(root, c, setting)]
    rows, rejects = [], _other_folders(root)
    for class_dir, path in tqdm(files, desc="manifest", disable=not progress, mininterval=2):
        used, refused = _rows_of(root, class_dir, path)
        rows += used
        rejects += refused
    rows, outside = _in_lung_range(rows)
    rejects += outside
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


def _rows_of(root: Path, class_dir: str, path: Path) -> tuple[list[dict], list[dict]]:
    """The manifest rows (without duplicate_of) and rejects rows of one file: a row for an
    image or DICOM file, a row per slice for a NIfTI volume (named volume.nii.gz#z0012)."""
    rel = str(path.relative_to(root))
    reason = hidden_reason(path.relative_to(root / class_dir))
    slices, file_digest = [(rel, path)], None
    if not reason and is_nifti(path) and path.exists():
        try:
            slices = [(name_of(rel, s.index), s) for s in volume_slices(path)]
        except DicomError as e:
            reason = str(e)
    if reason:
        return [], [{"path": rel, "class_dir": class_dir, "reason": reason}]
    rows, rejects = [], []
    for name, source in slices:
        info, why = _inspect(source, name)
        if why:
            rejects.append({"path": name, "class_dir": class_dir, "reason": why})
            continue
        file_digest = file_digest or sha256_of(path)  # once for a volume's slices
        digest = file_digest
        if isinstance(source, VolumeSlice):  # the same volume's slice is the same slice
            digest = hashlib.sha256(f"{file_digest}#z{source.index}".encode()).hexdigest()
        label = label_of(class_dir)
        rows.append({"path": name, "class_dir": class_dir, "label": label, "sha256": digest})
        rows[-1].update(info)
    return rows, rejects


def _in_lung_range(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The rows of the slices a DICOM series gives the model (vitct.data.series: its lung
    range, one stack), and rejects rows for the others with the reason."""
    choice = choose_slices([row.pop("dicom") for row in rows])
    reasons = [e or why for e, why in zip(choice.error, choice.left_out, strict=True)]
    outside = [
        {"path": row["path"], "class_dir": row["class_dir"], "reason": reason}
        for row, reason in zip(rows, reasons, strict=True)
        if reason
    ]
    if outside:
        log.info("%d DICOM slices left out by their series' lung range or stack", len(outside))
    return [row for row, reason in zip(rows, reasons, strict=True) if not reason], outside


def _other_folders(root: Path) -> list[dict]:
    """Rejects rows for the files of folders beside the class folders (a third class such as
    Pneumonia/ is no class of this model), and a warning that names those folders."""
    other = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and p.name not in CLASS_DIRS and not p.name.startswith((".", "__MACOSX"))
    )
    classes = " and ".join(f"{c}/" for c in CLASS_DIRS)
    if other:
        log.warning(
            "not used: folder(s) %s in %s; only %s are classes, so their files are left out",
            ", ".join(f"{p.name}/" for p in other),
            root,
            classes,
        )
    return [
        {
            "path": str(path.relative_to(root)),
            "class_dir": folder.name,
            "reason": hidden_reason(path.relative_to(folder))
            or f"not in a class folder: {folder.name}/ is no class of this model "
            f"(only {classes} are)",
        }
        for folder in other
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]


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
