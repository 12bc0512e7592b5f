"""Classify new CT slices with a trained model file.

    from vitct.prediction.predictor import load_model
    table = load_model("results/model.safetensors").predict(["scan.png", "scans/"])

Every image goes through `load_input` (the decoding that preprocessing used) and `predict_proba`
(what evaluation used) with the artifact's own image size, mean and std, so an image gets exactly
the probability that evaluation reported for it: `prob_covid` is calibrated by the model file's
temperature (vitct.model.calibration; T = 1 for a file without one, `Predictor.calibration`
holds a note then), as the scoring step's is. An input that cannot be classified gets a
message in the `error` column and the others are still classified. The same forward pass gives
each image's `ood_score` against the model file's familiarity reference (vitct.model.ood) and
`unfamiliar`, true when it lies beyond the reference's threshold or when the images of the call,
as a set, are unlike the training data (vitct.model.ood.set_is_shifted); both empty for a model
file without a reference.
"""

from __future__ import annotations

import http.client
import io
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from vitct.atomic_files import OutputError, write_text
from vitct.data.classes import CLASS_NAMES
from vitct.data.dicom import DicomError, DicomSlice, recorded_window
from vitct.data.histograms import HISTOGRAM_BINS
from vitct.data.images import ImagePolicyError, ImageWarning, in_memory, load_input
from vitct.data.nifti import SUFFIXES as NIFTI_SUFFIXES
from vitct.data.nifti import VolumeSlice, is_nifti, volume_slices
from vitct.data.series import choose_slices
from vitct.model.artifact import calibration_of, load_with_familiarity
from vitct.model.inference import predict_with_features
from vitct.model.ood import Familiarity

MAX_DOWNLOAD_BYTES = 64 * 2**20  # a CT slice PNG is well under 1 MiB
DOWNLOAD_TIMEOUT = 30.0  # seconds for one whole download
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".dcm")
# series: a DICOM slice's series (hashed); left_out: why a slice of it was not read (outside
# its lung range, vitct.data.series), which is no error.
COLUMNS = [
    "path",
    "predicted",
    "prob_covid",
    "error",
    "ood_score",
    "unfamiliar",
    "series",
    "left_out",
]


class InputError(Exception):
    """An input that cannot be classified; the message goes to the error column."""


class DemoModelWarning(UserWarning):
    """The model was trained on the synthetic demo data (its header says so)."""


class NoFamiliarityWarning(UserWarning):
    """The model file carries no familiarity reference: no image can be flagged unfamiliar."""


class InputKindWarning(UserWarning):
    """The images are of another kind (DICOM or NIfTI, or 8-bit slices) than the model was
    trained on."""


class Predictor:
    """A loaded model plus its preprocessing; `predict` classifies images."""

    def __init__(
        self,
        model,
        meta: dict,
        timeout: float,
        max_bytes: int,
        familiarity: Familiarity | None = None,
    ):
        self.model, self.meta, self.familiarity = model, meta, familiarity
        pre = meta["preprocessing"]
        self.image_size, self.mean, self.std = pre["image_size"], pre["mean"], pre["std"]
        # What of the slice the model sees (absent in older files: the whole, raw)
        self.mask, self.intensity = pre.get("mask", "none"), pre.get("intensity", "raw")
        # What it was trained on (files from before DICOM input: 8-bit slices); a DICOM file is
        # converted by the window training used (vitct.data.series.input_record)
        self.trained_on = pre.get("input", {"kind": "slices"})
        self.lung_window = recorded_window(pre)
        self.timeout, self.max_bytes = timeout, max_bytes
        # the temperature every probability is divided by (1 with a note for an older file)
        self.calibration = calibration_of(meta)
        self.temperature = float(self.calibration["temperature"])

    def predict(self, images, attention_dir: str | Path | None = None) -> pd.DataFrame:
        """One row per image: path, predicted (class name), prob_covid, error ("" when OK),
        ood_score and unfamiliar (missing where not classified or the model has no reference),
        series (a DICOM slice's hashed series) and left_out (why a slice of a series was not
        read: outside its lung range, vitct.data.series; not an error). series_verdicts()
        combines a series' slices into one verdict.

        images: file paths, folders (their image files, recursively, sorted), http(s) URLs, PIL
        images or numpy arrays, or a list of them. With attention_dir, an attention-rollout
        overlay per classified image is written there as NNNN_<name>.png (NNNN = row number).
        """
        if isinstance(images, str | Path | Image.Image | np.ndarray):
            images = [images]
        names, decoded, errors = [], [], []
        for name, item in _expand(images):
            names.append(name)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ImageWarning)
                try:
                    decoded.append(self._decode(item))
                    errors.append("")
                except InputError as e:
                    decoded.append(None)
                    errors.append(str(e))
            for warning in caught:  # what decoding did to an image it used (partly transparent)
                warnings.warn(f"{name}: {warning.message}", warning.category, stacklevel=2)
        series = [d[2] if d else None for d in decoded]
        self._warn_of_input_kind(decoded)
        # A series gives the slices of its lung range, as training took them
        choice = choose_slices(series)
        errors = [e or problem or "" for e, problem in zip(errors, choice.error, strict=True)]
        left_out = [reason or "" for reason in choice.left_out]
        ok = np.array([not e and not why for e, why in zip(errors, left_out, strict=True)], bool)
        arrays = [d[0] for d, read in zip(decoded, ok, strict=True) if read]
        greys = [d[1] for d, read in zip(decoded, ok, strict=True) if read]
        size = self.image_size
        batch = np.stack(arrays) if arrays else np.zeros((0, size, size), np.uint8)
        prob, ood_score = np.full(len(names), np.nan), np.full(len(names), np.nan)
        prob[ok], features = predict_with_features(
            self.model, batch, self.mean, self.std, temperature=self.temperature
        )
        if self.familiarity is not None:
            grey = np.stack(greys) if greys else np.zeros((0, HISTOGRAM_BINS))
            ood_score[ok] = self.familiarity.score(features, grey)
        predicted = np.where(ok, np.asarray(CLASS_NAMES)[(prob >= 0.5).astype(int)], "")
        table = pd.DataFrame(
            {"path": names, "predicted": predicted, "prob_covid": prob, "error": errors},
            columns=COLUMNS,
        )
        table["ood_score"] = ood_score
        table["unfamiliar"] = pd.Series(pd.NA, index=table.index, dtype="boolean")
        table["series"] = [s.series if s else "" for s in series]
        table["left_out"] = left_out
        if self.familiarity is not None:  # the images of one call are judged as a set too
            table["unfamiliar"], table.attrs["set_unfamiliar"] = self.familiarity.set_flags(
                ood_score
            )
        if attention_dir is not None and len(batch):
            try:
                self._write_attention(batch, table[ok], Path(attention_dir))
            except (OutputError, OSError) as e:  # the predictions are kept: the caller says why
                table.attrs["attention_error"] = getattr(e, "cause", None) or e
        return table

    def _warn_of_input_kind(self, decoded: list) -> None:
        """Say so when the images are not what the model was trained on; refuse nothing."""
        kind = self.trained_on["kind"]
        hounsfield = sum(d is not None and d[2] is not None for d in decoded)
        other = sum(d is not None and d[2] is None for d in decoded)
        if hounsfield and kind == "slices":
            warnings.warn(
                f"the model was trained on 8-bit slices (PNG-like exports), not on DICOM or "
                f"NIfTI: its {hounsfield} slice(s) in Hounsfield units are converted by the lung "
                f"window (level, width) {self.lung_window} HU, which need not match how its "
                "training slices were exported; measure it on labelled series of yours before "
                "trusting it",
                InputKindWarning,
                stacklevel=3,
            )
        elif other and kind == "hounsfield":
            window = tuple(self.trained_on["window"])
            warnings.warn(
                f"the model was trained on CT in Hounsfield units (DICOM or NIfTI) converted by "
                f"the lung window {window} HU; its {other} other image(s) were exported by a "
                "window it does not know: give the DICOM or NIfTI files where you have them",
                InputKindWarning,
                stacklevel=3,
            )

    def _decode(self, item) -> tuple[np.ndarray, np.ndarray, DicomSlice | None]:
        try:
            if isinstance(item, Image.Image):
                item = in_memory(item)  # upright, transparency kept: as its file would decode
            return load_input(
                self._source(item), self.image_size, self.mask, self.intensity, self.lung_window
            )
        except InputError:
            raise
        except FileNotFoundError:
            raise InputError("file not found") from None
        except (ImagePolicyError, DicomError) as e:  # the pipeline's own limits, said alike
            raise InputError(str(e)) from None
        except UnidentifiedImageError:
            raise InputError("not an image file (PIL cannot identify its format)") from None
        except (OSError, SyntaxError) as e:
            if getattr(e, "errno", None):  # the system refused (permissions, I/O), not PIL
                raise InputError(f"cannot read file: {e.strerror}") from None
            raise InputError(f"corrupt or truncated image: {e}") from None  # PIL's own errors
        except Exception as e:  # one odd input must never stop a whole batch
            raise InputError(f"cannot decode: {type(e).__name__}: {e}") from None

    def _source(self, item):
        """What load_input opens: a path, or a file object for URLs and in-memory images."""
        if isinstance(item, InputError):
            raise item
        if isinstance(item, VolumeSlice):
            return item
        if isinstance(item, np.ndarray):
            try:
                item = Image.fromarray(item)
            except (TypeError, ValueError) as e:
                raise InputError(f"array is not an image (shape {item.shape}): {e}") from None
        if isinstance(item, Image.Image):
            # A lossless re-encoding keeps every mode (RGBA, I;16, F...) as it is, so an in-memory
            # image takes the very same path through load_input as a file does.
            buf = io.BytesIO()
            item.save(buf, format="TIFF")
            buf.seek(0)
            return buf
        if isinstance(item, str) and _is_url(item):
            return io.BytesIO(_download(item, self.timeout, self.max_bytes))
        if isinstance(item, str | Path):
            return Path(item)
        raise InputError(f"unsupported input type {type(item).__name__}")

    def _write_attention(self, images: np.ndarray, rows: pd.DataFrame, folder: Path) -> None:
        # Imported here: matplotlib and the attention code are only needed for this option.
        from vitct.evaluation.figures import plot_overlay
        from vitct.model.attention import attention_weights, rollout, to_grid

        folder.mkdir(parents=True, exist_ok=True)
        cfg = self.model.cfg
        for start in range(0, len(images), 64):  # bounded memory: N x N weights per layer
            chunk = images[start : start + 64]
            weights = attention_weights(self.model, chunk, self.mean, self.std)
            heat = to_grid(rollout(weights, cfg.pooling == "cls"), cfg.grid_size)
            for image, h, row in zip(
                chunk, heat, rows.iloc[start : start + 64].itertuples(), strict=True
            ):
                stem = re.sub(r"[^\w.-]+", "_", Path(row.path).stem).strip("_")[:60]
                title = f"{row.path}\n{row.predicted} (p_covid={row.prob_covid:.3f})"
                plot_overlay(image, h, title, folder / f"{row.Index:04d}_{stem}.png")


def load_model(
    path: str | Path,
    *,
    device: str = "cpu",
    timeout: float = DOWNLOAD_TIMEOUT,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> Predictor:
    """The model in a vitct model file; raises ArtifactError for a wrong or damaged file.

    timeout (seconds) and max_bytes limit each URL download. Evaluation runs on the CPU, so the
    default device gives its exact probabilities.
    """
    model, meta, familiarity = load_with_familiarity(path, device)
    if meta.get("data", {}).get("real_data") is False:
        warnings.warn(
            f"'{path}' was trained on the synthetic demo data (dataset.source demo), not on real "
            "CT slices: its predictions say nothing about real scans",
            DemoModelWarning,
            stacklevel=2,
        )
    if familiarity is None:
        warnings.warn(
            f"'{path}' carries no familiarity reference (written before vitct flagged unfamiliar "
            "images): images unlike its training data cannot be flagged",
            NoFamiliarityWarning,
            stacklevel=2,
        )
    return Predictor(model, meta, timeout, max_bytes, familiarity)


def unfamiliar_warning(table: pd.DataFrame, shown: int = 3) -> str | None:
    """What to tell the user when images were flagged unfamiliar (None when none was)."""
    flagged = table.path[table.unfamiliar.fillna(False).astype(bool)].tolist()
    if not flagged:
        return None
    scored = int(table.unfamiliar.notna().sum())
    first = ", ".join(flagged[:shown]) + (", ..." if len(flagged) > shown else "")
    if table.attrs.get("set_unfamiliar"):
        return (
            f"these {scored} images, as a set, look unlike the model's training data: far more "
            "of them lie beyond its out-of-distribution threshold than of its own source's "
            "slices, so every one is flagged (unfamiliar column); measure the model on labelled "
            "slices of this source, or adapt it (vitct adapt), before trusting its predictions"
        )
    return (
        f"{len(flagged)} of {scored} images look unlike the model's training data "
        "(unfamiliar column): the model was trained on one source, so its predictions on "
        f"them are unreliable: {first}"
    )


def write_csv(table: pd.DataFrame, out) -> None:
    """The table as CSV (to a path, or an open text stream such as stdout), probabilities and
    ood scores rounded as in evaluation's predictions.csv."""
    rounded = table.assign(prob_covid=table.prob_covid.round(6), ood_score=table.ood_score.round(4))
    text = rounded.to_csv(index=False, columns=COLUMNS)
    if isinstance(out, str | Path):
        write_text(out, text)
    else:
        out.write(text)


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def _file_url_path(url: str) -> Path | InputError:
    """The local path a file: URL names (file:///scans/a.png); another host's is not fetched."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        return InputError(
            f"file:// URL on another host ('{parts.netloc}') is not fetched; give the path itself"
        )
    return Path(urllib.request.url2pathname(parts.path))


def _expand(images) -> list[tuple[str, object]]:
    """(name for the path column, input) per image; a folder becomes its image files."""
    items = []
    for k, item in enumerate(images):
        # A file: URL (what a file manager copies) is read as its path, under the name given.
        url = item if isinstance(item, str) and item.lower().startswith("file:/") else None
        if url:
            item = _file_url_path(url)
        if isinstance(item, Image.Image):
            items.append((getattr(item, "filename", "") or f"<image {k}>", item))
        elif isinstance(item, np.ndarray):
            items.append((f"<array {k}>", item))
        elif isinstance(item, str | Path) and not _is_url(str(item)) and Path(item).is_dir():
            folder = Path(item)
            files = sorted(
                p
                for p in folder.rglob("*")
                if (p.suffix.lower() in IMAGE_SUFFIXES or is_nifti(p))
                and p.is_file()
                # hidden files (macOS ._name copies, checkpoints) are not scans
                and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            )
            items += [entry for p in files for entry in _volume_or_file(str(p), p)]
            if not files:  # say so, rather than return nothing for a wrong folder
                suffixes = ", ".join((*IMAGE_SUFFIXES, *NIFTI_SUFFIXES))
                error = InputError(f"folder holds no image files ({suffixes})")
                items.append((url or str(item), error))
        else:
            items += _volume_or_file(url or str(item), item)
    return items


def _volume_or_file(name: str, item) -> list[tuple[str, object]]:
    """A NIfTI volume's slices (one row each), or the item itself."""
    if not (is_nifti(item) and Path(item).is_file()):
        return [(name, item)]
    try:
        return [(str(s), s) for s in volume_slices(Path(item))]
    except DicomError as e:
        return [(name, InputError(str(e)))]


def _download(url: str, timeout: float, max_bytes: int) -> bytes:
    """The body of an image URL, within the timeout (whole download) and the byte limit."""
    deadline = time.monotonic() + timeout
    too_big = f"download exceeds the limit of {max_bytes} bytes"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if kind and not kind.startswith("image/") and kind != "application/octet-stream":
                raise InputError(f"URL returned {kind}, not an image")
            if int(response.headers.get("Content-Length") or 0) > max_bytes:
                raise InputError(too_big)
            body = bytearray()
            # read1 returns after each network read, so the deadline and the byte cap hold even
            # for a server that trickles bytes or sends no Content-Length.
            while chunk := response.read1(1 << 16):
                body += chunk
                if len(body) > max_bytes:
                    raise InputError(too_big)
                if time.monotonic() > deadline:
                    raise TimeoutError
            return bytes(body)
    except urllib.error.HTTPError as e:
        raise InputError(f"HTTP error {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise InputError(f"URL timed out after {timeout:g} s") from None
        raise InputError(f"cannot fetch URL: {e.reason}") from None
    except TimeoutError:
        raise InputError(f"URL timed out after {timeout:g} s") from None
    except (OSError, ValueError, http.client.HTTPException) as e:  # reset, bad header or URL
        raise InputError(f"cannot fetch URL: {e}") from None
