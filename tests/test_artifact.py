"""The model file is verified whole: header and weights, checksum and schema.

Every damage, by hand or by one flipped bit, is refused with one line (exit 2 from `vitct
predict`), never loaded quietly with other settings and never a traceback.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, rewrite_header
from PIL import Image

from vitct import cli
from vitct.model.artifact import (
    ArtifactError,
    calibration_of,
    header_sha256,
    load_artifact,
    load_with_familiarity,
    read_metadata,
    save_artifact,
)
from vitct.model.calibration import Calibration
from vitct.model.ood import Distance, Familiarity
from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT

PRE = {"image_size": 16, "grey": "PIL convert('L')", "mean": 0.1996, "std": 0.25}
REFERENCE = Familiarity(
    features=Distance(np.linspace(-1, 1, 8), np.eye(8) + 0.1, 4.25),
    grey=Distance(np.full(32, 1 / 32), np.eye(32), 0.5),
    val_flagged_share=0.05,
    train_images=120,
)
CALIBRATION = Calibration(
    temperature=1.75,
    images=30,
    images_sha256="ab" * 32,
    ece_before=0.12,
    ece_after=0.04,
    brier_before=0.1,
    brier_after=0.08,
)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A tiny model file with a header like the pipeline's (its header is most of the file)."""
    torch.manual_seed(0)
    model = ViT(ViTConfig(**TINY_MODEL))
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_artifact(
        path,
        model,
        preprocessing=PRE,
        familiarity=REFERENCE,
        calibration=CALIBRATION,
        data={"source": "local", "real_data": True, "counts": {"COVID": 40, "non-COVID": 40}},
        validation={"val_accuracy": 0.95, "val_mcc": 0.9},
    )
    return path


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scan") / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20), np.uint8)).save(path)
    return path


# What the tries did by hand to the header: each loaded, or crashed, before.
HAND_EDITS = {
    "normalisation mean": lambda meta: meta["preprocessing"].update(mean=0.9996),
    "preprocessing key renamed": lambda meta: meta.update(preprocess=meta.pop("preprocessing")),
    "image size": lambda meta: meta["preprocessing"].update(image_size=74),
    "class names swapped": lambda meta: meta.update(class_names=meta["class_names"][::-1]),
    "provenance": lambda meta: meta["data"].update(real_data=False),
    "familiarity threshold": lambda meta: meta["familiarity"].update(threshold=1e9),
    "temperature": lambda meta: meta["calibration"].update(temperature=1.0),
}


@pytest.mark.parametrize("edit", HAND_EDITS, ids=list(HAND_EDITS))
def test_an_edited_header_is_refused_with_exit_2_and_one_line(
    edit, model_file, scan, tmp_path, capsys
):
    edited = rewrite_header(model_file, tmp_path / "edited.safetensors", HAND_EDITS[edit])
    with pytest.raises(ArtifactError, match="header does not match the sha256 it carries"):
        read_metadata(edited)
    assert cli.main(["predict", str(edited), str(scan)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("vitct: ") and captured.err.count("\n") == 1


def resealed(model_file: Path, dst: Path, change) -> Path:
    """An edited header whose checksum was computed again: only the schema can refuse it."""

    def change_and_seal(meta):
        change(meta)
        meta["header_sha256"] = header_sha256(meta)

    return rewrite_header(model_file, dst, change_and_seal)


SCHEMA_CASES = {
    "mean as text": (
        lambda meta: meta["preprocessing"].update(mean="0.2"),
        "preprocessing.mean: '0.2' is not of type 'number'",
    ),
    "preprocessing missing": (
        lambda meta: meta.pop("preprocessing"),
        "header: 'preprocessing' is a required property",
    ),
    "image size the model was not built for": (
        lambda meta: meta["preprocessing"].update(image_size=74),
        "preprocessing.image_size 74 differs from the model's model_config.image_size 16",
    ),
    "std of zero": (
        lambda meta: meta["preprocessing"].update(std=0),
        "preprocessing.std: 0 is less than or equal to the minimum of 0",
    ),
    "depth as text": (
        lambda meta: meta["model_config"].update(depth="1"),
        "model_config.depth: '1' is not of type 'integer'",
    ),
    "heads that do not divide the width": (
        lambda meta: meta["model_config"].update(heads=3),
        "model_config: heads 3 does not divide embed_dim 8",
    ),
    "familiarity threshold of zero (every score is divided by it)": (
        lambda meta: meta["familiarity"].update(threshold=0),
        "familiarity.threshold: 0 is less than or equal to the minimum of 0",
    ),
    "familiarity without its size": (
        lambda meta: meta["familiarity"].pop("train_images"),
        "familiarity: 'train_images' is a required property",
    ),
    "temperature of zero (a positive one keeps every class)": (
        lambda meta: meta["calibration"].update(temperature=0),
        "calibration.temperature: 0 is less than or equal to the minimum of 0",
    ),
    "negative temperature": (
        lambda meta: meta["calibration"].update(temperature=-2.0),
        "calibration.temperature: -2.0 is less than or equal to the minimum of 0",
    ),
    "infinite temperature": (
        lambda meta: meta["calibration"].update(temperature=float("inf")),
        "calibration.temperature: inf is not a finite number",
    ),
    "calibration without its temperature": (
        lambda meta: meta["calibration"].pop("temperature"),
        "calibration: 'temperature' is a required property",
    ),
    "provenance of the wrong type": (
        lambda meta: meta["data"].update(real_data="no"),
        "data.real_data: 'no' is not of type 'boolean'",
    ),
}


@pytest.mark.parametrize("case", SCHEMA_CASES, ids=list(SCHEMA_CASES))
def test_a_resealed_header_with_wrong_fields_is_refused_by_the_schema(case, model_file, tmp_path):
    change, message = SCHEMA_CASES[case]
    path = resealed(model_file, tmp_path / "resealed.safetensors", change)
    with pytest.raises(ArtifactError, match="has an invalid header") as refused:
        read_metadata(path)
    assert message in str(refused.value)


def test_the_intact_file_loads(model_file):
    model, meta = load_artifact(model_file)
    assert meta["preprocessing"]["mean"] == 0.1996 and model.cfg.image_size == 16


def test_flipping_a_bit_of_any_header_byte_is_refused_or_changes_nothing(model_file, tmp_path):
    data = model_file.read_bytes()
    header_end = 8 + struct.unpack("<Q", data[:8])[0]  # length prefix, then the JSON header
    original_meta = read_metadata(model_file)
    original_state = load_artifact(model_file)[0].state_dict()
    flipped_file = tmp_path / "flipped.safetensors"
    flipped_file.write_bytes(data)
    refused, silent, crashed = 0, [], []
    with open(flipped_file, "r+b") as f:  # flipped in place and back: no new file per flip
        for offset in range(header_end):
            f.seek(offset)
            f.write(bytes([data[offset] ^ 1 << (offset % 8)]))  # every bit position in turn
            f.flush()
            outcome = _load_flipped(flipped_file, original_meta, original_state)
            f.seek(offset)
            f.write(data[offset : offset + 1])
            f.flush()
            if outcome == "refused":
                refused += 1
            elif outcome:
                (silent if "silently" in outcome else crashed).append((offset, outcome))
    assert not silent, f"{len(silent)} flips changed the model silently: {silent[:10]}"
    assert not crashed, f"{len(crashed)} flips were not refused in one line: {crashed[:10]}"
    assert refused > 0.95 * header_end  # nearly every flip changes something: all refused


def _load_flipped(path: Path, original_meta: dict, original_state: dict) -> str:
    """'refused' (one line), '' (loaded, nothing changed), or what went wrong."""
    try:
        meta = read_metadata(path)  # the header alone: fast
        if meta != original_meta:
            return "header changed silently"
        # The vitct header is intact, so the flip is in the tensor table: load the weights.
        state = load_artifact(path)[0].state_dict()
        if any(not torch.equal(state[k], original_state[k]) for k in original_state):
            return "weights changed silently"
        return ""
    except ArtifactError as e:
        return "refused" if "\n" not in str(e) else f"refused in more than one line: {e}"
    except Exception as e:  # noqa: BLE001 (any other exception is what the test looks for)
        return f"raised {type(e).__name__}: {e}"


def test_the_familiarity_reference_round_trips_apart_from_the_weights(model_file):
    model, meta, reference = load_with_familiarity(model_file)
    assert meta["familiarity"] == REFERENCE.header()
    for part in ("features", "grey"):
        ours, theirs = getattr(reference, part), getattr(REFERENCE, part)
        np.testing.assert_array_equal(ours.mean, theirs.mean)
        np.testing.assert_array_equal(ours.precision, theirs.precision)
        assert ours.threshold == theirs.threshold
    assert reference.train_images == 120
    assert not any(name.startswith("familiarity") for name in model.state_dict())


@pytest.mark.parametrize(
    "tensor", ["familiarity.mean", "familiarity.precision", "familiarity.grey_precision"]
)
def test_a_flipped_bit_in_the_familiarity_reference_is_refused(model_file, tmp_path, tensor):
    data = bytearray(model_file.read_bytes())
    length = struct.unpack("<Q", data[:8])[0]
    start, end = json.loads(data[8 : 8 + length])[tensor]["data_offsets"]
    offset = 8 + length + (start + end) // 2
    data[offset] ^= 0x10
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="weights do not match the sha256"):
        load_with_familiarity(flipped)


def test_the_calibration_round_trips(model_file):
    meta = read_metadata(model_file)
    assert meta["calibration"] == CALIBRATION.header()
    assert Calibration.from_header(meta["calibration"]) == CALIBRATION
    assert calibration_of(meta) == CALIBRATION.header()


def test_a_file_without_a_familiarity_reference_or_calibration_still_loads(tmp_path):
    torch.manual_seed(0)
    model = ViT(ViTConfig(**TINY_MODEL))
    save_artifact(tmp_path / "old.safetensors", model, preprocessing=PRE)
    loaded, meta, reference = load_with_familiarity(tmp_path / "old.safetensors")
    assert reference is None and "familiarity" not in meta
    assert "calibration" not in meta and calibration_of(meta)["temperature"] == 1.0
    assert load_artifact(tmp_path / "old.safetensors")[0].cfg == model.cfg


def test_a_reference_that_does_not_fit_the_model_is_refused(tmp_path):
    torch.manual_seed(0)
    model = ViT(ViTConfig(**TINY_MODEL))
    wrong = Familiarity(Distance(np.zeros(4), np.eye(4), 1.0), None, 0.05, 10)
    save_artifact(tmp_path / "wrong.safetensors", model, preprocessing=PRE, familiarity=wrong)
    with pytest.raises(ArtifactError, match="does not fit the model's 8 features"):
        load_with_familiarity(tmp_path / "wrong.safetensors")
