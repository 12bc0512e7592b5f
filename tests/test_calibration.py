"""Temperature scaling: fitted on inner-validation logits alone, it changes no predicted class and
lowers the calibration error of an overconfident model; the model file carries it, and
`vitct predict` and scoring give the calibrated probability."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, rewrite_header
from PIL import Image
from test_protocol import SPLIT, learnable_data

from vitct import cli
from vitct.data.images import load_input
from vitct.data.partition import run_data, run_parts
from vitct.evaluation.metrics import brier_score, expected_calibration_error
from vitct.evaluation.scoring import ChangedClassError, Part, predictions
from vitct.model.artifact import (
    ArtifactError,
    calibration_of,
    header_sha256,
    load_artifact,
    read_metadata,
    save_artifact,
)
from vitct.model.calibration import LOG_BOUNDS, Calibration, fit_temperature, nll
from vitct.model.inference import covid_probability, logits_and_features
from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT
from vitct.prediction.predictor import load_model
from vitct.training.run import calibrate, train_run
from vitct.training.settings import TrainConfig

PRE = {"image_size": 16, "mean": 0.4, "std": 0.2}


def calibrated_logits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) logits whose softmax is calibrated by construction, and labels drawn from it."""
    rng = np.random.default_rng(seed)
    difference = rng.normal(0.0, 2.0, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-difference))).astype(int)
    return np.stack([np.zeros(n), difference], axis=1).astype(np.float32), labels


def test_a_temperature_lowers_the_error_of_logits_scaled_by_5_and_changes_no_class():
    val_logits, val_labels = calibrated_logits(2000, seed=0)
    test_logits, test_labels = calibrated_logits(2000, seed=1)
    temperature = fit_temperature(5 * val_logits, val_labels)  # overconfident by 5
    assert temperature == pytest.approx(5.0, rel=0.1)
    raw, calibrated = covid_probability(5 * test_logits), covid_probability(5 * test_logits, 5.0)
    before = expected_calibration_error(test_labels, raw)
    after = expected_calibration_error(test_labels, covid_probability(5 * test_logits, temperature))
    assert before > 0.1 and after < 0.03
    assert brier_score(test_labels, calibrated) < brier_score(test_labels, raw)
    np.testing.assert_array_equal(raw >= 0.5, calibrated >= 0.5)
    # logits already calibrated need no temperature; underconfident ones get one below 1
    assert fit_temperature(val_logits, val_labels) == pytest.approx(1.0, abs=0.1)
    assert fit_temperature(val_logits / 3, val_labels) == pytest.approx(1 / 3, rel=0.1)


@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0, 2.0, 20.0])
def test_a_positive_temperature_never_changes_a_predicted_class(temperature):
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 4, (5000, 2)).astype(np.float32)
    logits[:50, 1] = logits[:50, 0]  # ties: 0.5, COVID, at any temperature
    logits[50:100, 1] = np.nextafter(logits[50:100, 0], np.float32(np.inf))  # one step apart
    logits[100:150, 1] = np.nextafter(logits[100:150, 0], np.float32(-np.inf))
    raw = covid_probability(logits)
    scaled = covid_probability(logits, temperature)
    np.testing.assert_array_equal(raw >= 0.5, scaled >= 0.5)
    np.testing.assert_array_equal(scaled >= 0.5, logits[:, 1] >= logits[:, 0])


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_a_temperature_that_is_not_positive_and_finite_is_refused(temperature):
    with pytest.raises(ValueError, match="positive finite"):
        covid_probability(np.zeros((1, 2)), temperature)


def test_the_fit_minimises_the_nll_over_its_range_and_is_never_worse_than_none():
    logits, labels = calibrated_logits(500, seed=2)
    scaled = 2.5 * logits
    temperature = fit_temperature(scaled, labels)
    grid = np.exp(np.linspace(*LOG_BOUNDS, 2001))
    best_on_grid = min(nll(scaled, labels, t) for t in grid)
    assert nll(scaled, labels, temperature) <= best_on_grid + 1e-9
    assert nll(scaled, labels, temperature) <= nll(scaled, labels, 1.0)
    # a temperature changes nothing when every logit is zero: T = 1 is kept
    assert fit_temperature(np.zeros((10, 2)), labels[:10]) == 1.0


def test_the_temperature_is_the_inner_validation_splits_and_lowers_an_overconfident_vits_ece():
    """A tiny ViT trained to overconfidence (a quarter of the near-duplicate groups labelled
    wrong, which it memorises: 100 epochs, no smoothing, no decay) on a synthetic set: its
    temperature, fitted on the run's inner validation images, is the one `calibrate` gives for
    those images' logits, above 1, and lowers the ECE and Brier score on the held-out fold."""
    torch.set_num_threads(1)
    cache, table = learnable_data(n_groups=80, seed=4)
    group = table.near_duplicate_group.to_numpy()
    noisy = (np.random.default_rng(0).random(group.max() + 1) < 0.25)[group]
    table = table.assign(label=np.where(noisy, 1 - table.label, table.label))
    cache = {**cache, "y": table.label.to_numpy(np.int64)}
    model_cfg = ViTConfig(**{**TINY_MODEL, "patch_size": 4, "embed_dim": 32, "dropout": 0.0})
    train_cfg = TrainConfig(
        epochs=100, batch_size=16, warmup_epochs=1, lr=3e-3, augment=False, cutmix=0.0,
        label_smoothing=0.0, weight_decay=0.0, select_best_epoch=False, patience=0,
        device="cpu", prefetch=False,
    )  # fmt: skip
    run = train_run(cache, table, "fold0", SPLIT, model_cfg, train_cfg)
    parts = run_parts(table, "fold0", SPLIT["val"], SPLIT["seed"])
    data = run_data(cache, table, parts, ("val", "held_out"))
    val_logits, _ = logits_and_features(run.model, data["val_x"], run.mean, run.std, bf16=False)
    again = calibrate(val_logits, data["val_y"], data["val_paths"])
    assert run.calibration == again  # from the inner validation images, nothing else
    assert run.calibration.images == run.images["val"] == len(data["val_y"])
    assert run.calibration.temperature > 2  # overconfident
    assert run.calibration.ece_after < run.calibration.ece_before
    held_logits, _ = logits_and_features(
        run.model, data["held_out_x"], run.mean, run.std, bf16=False
    )
    raw = covid_probability(held_logits)
    calibrated = covid_probability(held_logits, run.calibration.temperature)
    y = data["held_out_y"]
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, raw)
    assert brier_score(y, calibrated) < brier_score(y, raw)
    np.testing.assert_array_equal(raw >= 0.5, calibrated >= 0.5)


def test_scoring_refuses_a_temperature_that_changed_a_class_and_writes_both_probabilities():
    n = 4
    part = Part(
        "test",
        np.zeros((n, 8, 8), np.uint8),
        np.array([0, 1, 0, 1]),
        np.array([f"{k}.png" for k in range(n)]),
        np.zeros((n, 32)),
        np.random.default_rng(0).integers(0, 255, (n, 8, 8)).astype(np.uint8),
        np.arange(n),
    )
    raw = np.array([0.01, 0.99, 0.4, 0.7])
    rows = predictions(part, np.array([0.1, 0.9, 0.45, 0.6]), part, prob_raw=raw)
    np.testing.assert_allclose(rows.prob_raw, raw)
    np.testing.assert_allclose(rows.prob_covid, [0.1, 0.9, 0.45, 0.6])
    with pytest.raises(ChangedClassError, match="changed the predicted class of 1 image"):
        predictions(part, np.array([0.1, 0.9, 0.55, 0.6]), part, prob_raw=raw)
    baseline = predictions(part, raw, part)  # no temperature: both the same
    np.testing.assert_array_equal(baseline.prob_raw, baseline.prob_covid)


# --- the model file ---------------------------------------------------------------------------

CALIBRATION = Calibration(
    temperature=2.5,
    images=40,
    images_sha256="0" * 64,
    ece_before=0.2,
    ece_after=0.05,
    brier_before=0.2,
    brier_after=0.15,
)


def tiny_model() -> ViT:
    torch.manual_seed(0)
    return ViT(ViTConfig(**TINY_MODEL))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """The same weights with the calibration above, and without one (a file from before it)."""
    folder = tmp_path_factory.mktemp("calibrated")
    model = tiny_model()
    paths = {"calibrated": folder / "calibrated.safetensors", "old": folder / "old.safetensors"}
    save_artifact(paths["calibrated"], model, PRE, calibration=CALIBRATION)
    save_artifact(paths["old"], model, PRE)
    paths["scan"] = folder / "scan.png"
    pixels = np.random.default_rng(0).integers(0, 256, (20, 20), np.uint8)
    Image.fromarray(pixels).save(paths["scan"])
    return paths


def test_the_model_file_round_trips_its_calibration(files):
    meta = read_metadata(files["calibrated"])
    assert meta["calibration"] == CALIBRATION.header()
    assert Calibration.from_header(meta["calibration"]) == CALIBRATION
    assert calibration_of(meta)["temperature"] == 2.5
    old = calibration_of(read_metadata(files["old"]))
    assert old["temperature"] == 1.0 and "written before temperature scaling" in old["note"]


@pytest.mark.parametrize("temperature", [0, -1.5])
def test_a_header_with_a_non_positive_temperature_is_refused_in_one_line(
    files, tmp_path, temperature, capsys
):
    def change(meta):
        meta["calibration"]["temperature"] = temperature
        meta["header_sha256"] = header_sha256(meta)  # resealed: only the schema can refuse it

    path = rewrite_header(files["calibrated"], tmp_path / "cold.safetensors", change)
    with pytest.raises(ArtifactError, match="calibration.temperature") as refused:
        load_artifact(path)
    assert "\n" not in str(refused.value) and "less than or equal to the minimum of 0" in str(
        refused.value
    )
    assert cli.main(["predict", str(path), str(files["scan"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitct: ") and err.count("\n") == 1 and "calibration.temperature" in err


def test_predict_gives_the_calibrated_probability_and_an_older_file_t_1(files, recwarn):
    scan = str(files["scan"])
    calibrated = load_model(files["calibrated"])
    old = load_model(files["old"])
    assert calibrated.temperature == 2.5 and old.temperature == 1.0
    assert "note" in old.calibration and "note" not in calibrated.calibration
    x = load_input(scan, 16)[0]
    logits, _ = logits_and_features(calibrated.model, np.asarray(x)[None], PRE["mean"], PRE["std"])
    table, before = calibrated.predict(scan), old.predict(scan)
    assert table.prob_covid[0] == covid_probability(logits, 2.5)[0]
    assert before.prob_covid[0] == covid_probability(logits)[0]
    assert table.predicted[0] == before.predicted[0]
    assert abs(table.prob_covid[0] - 0.5) < abs(before.prob_covid[0] - 0.5)  # less sure
