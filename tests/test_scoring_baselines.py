"""What a finished run is scored on, the rows of its predictions table, and the baselines fitted
on the images it saw."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import table_of_groups
from threadpoolctl import threadpool_limits

from vitct.data.histograms import HISTOGRAM_BINS, grey_histograms
from vitct.data.partition import assign_folds
from vitct.evaluation.baselines import BASELINES, fit_baselines
from vitct.evaluation.scoring import (
    COLUMNS,
    Part,
    external_part,
    predictions,
    read_predictions,
    seen_and_scored,
)

SPLIT = {"val": 0.25, "seed": 0, "near_duplicate_threshold": 0.95}
SIDE = 8  # thumbnails and images of these tests are 8x8


def partition_and_cache(n_groups: int = 60) -> tuple[pd.DataFrame, dict]:
    """table_of_groups in three folds, and an image cache of its rows (noise thumbnails, each
    image its own) in reverse order."""
    table = table_of_groups(n_groups=n_groups)
    table["fold"] = assign_folds(table, 3, seed=0)
    rng = np.random.default_rng(0)
    order = table.index[::-1]
    n = len(order)
    images = rng.integers(0, 256, (n, SIDE, SIDE), dtype=np.uint8)
    cache = {
        "paths": table.path[order].to_numpy(),
        "x": images,
        "y": table.label[order].to_numpy(),
        "histograms": grey_histograms(images),
        "thumbnails": images,
    }
    return table, cache


def external_set() -> dict:
    """Four images of another source: the first two byte-identical, the others unrelated."""
    rng = np.random.default_rng(9)
    images = rng.integers(0, 256, (4, SIDE, SIDE), dtype=np.uint8)
    images[1] = images[0]
    return {
        "paths": np.array([f"ext/{i}.png" for i in range(4)]),
        "x": images,
        "y": np.array([1, 1, 0, 0]),
        "histograms": grey_histograms(images),
        "thumbnails": images,
    }


def test_a_fold_run_is_scored_on_its_held_out_fold_the_locked_test_and_external_sets():
    table, cache = partition_and_cache()
    seen, scored = seen_and_scored(cache, table, "fold1", SPLIT, {"scanner_b": external_set()})
    assert [p.name for p in scored] == ["held_out", "test", external_part("scanner_b")]
    held_out, test, _ = scored
    assert list(held_out.paths) == list(table.path[(table.fold == 1) & ~table.test])
    assert list(test.paths) == list(table.path[table.test])
    training = table[~table.test & (table.fold != 1)]
    assert sorted(seen.paths) == sorted(training.path)
    label = dict(zip(table.path, table.label, strict=True))
    assert [label[p] for p in seen.paths] == list(seen.y)
    assert [label[p] for p in held_out.paths] == list(held_out.y)


def test_a_run_on_all_is_scored_on_the_locked_test_and_has_seen_the_whole_pool():
    table, cache = partition_and_cache()
    seen, scored = seen_and_scored(cache, table, "all", SPLIT, {})
    assert [p.name for p in scored] == ["test"]
    assert sorted(seen.paths) == sorted(table.path[~table.test])
    assert not set(seen.paths) & set(scored[0].paths)


def test_an_external_set_gets_its_own_near_duplicate_groups():
    table, cache = partition_and_cache()
    external = external_set()
    _, scored = seen_and_scored(cache, table, "all", SPLIT, {"elsewhere": external})
    part = scored[-1]
    assert part.name == "external:elsewhere"
    assert part.groups[0] == part.groups[1]  # the byte-identical pair
    assert len(set(part.groups)) == 3
    np.testing.assert_array_equal(part.grey, external["histograms"])
    np.testing.assert_array_equal(part.y, external["y"])


def test_predictions_have_the_columns_of_every_table_and_rounded_values():
    table, cache = partition_and_cache()
    seen, (test,) = seen_and_scored(cache, table, "all", SPLIT, {})
    prob = np.linspace(0, 1, len(test.y)) + 1e-9
    rows = predictions(test, prob, seen)
    assert list(rows.columns) == COLUMNS
    assert (rows.part == "test").all() and list(rows.path) == list(test.paths)
    assert rows.label.dtype.kind == "i" and list(rows.label) == list(test.y)
    np.testing.assert_allclose(rows.prob_covid, np.round(prob, 6))
    assert list(rows.group) == list(test.groups)
    # A baseline has no out-of-distribution score or flag: empty, not False.
    assert rows.ood_score.isna().all() and rows.unfamiliar.isna().all()
    flags = pd.Series([True, False] * (len(test.y) // 2) + [True] * (len(test.y) % 2))
    scored = predictions(test, prob, seen, np.full(len(test.y), 0.123456), flags)
    assert (scored.ood_score == 0.1235).all()
    assert scored.unfamiliar.tolist() == flags.tolist()


def test_nearest_seen_is_near_1_only_for_a_copy_of_a_seen_image():
    table, cache = partition_and_cache()
    seen, (test,) = seen_and_scored(cache, table, "all", SPLIT, {})
    thumbnails = test.thumbnails.copy()
    thumbnails[0] = seen.thumbnails[5]
    noisy = seen.thumbnails[6].astype(int) + np.random.default_rng(1).integers(-4, 5, (8, 8))
    thumbnails[1] = np.clip(noisy, 0, 255).astype(np.uint8)
    part = Part("test", test.x, test.y, test.paths, test.grey, thumbnails, test.groups)
    rows = predictions(part, np.full(len(test.y), 0.5), seen)
    assert rows.nearest_seen[0] == pytest.approx(1.0, abs=1e-4)
    assert 0.95 < rows.nearest_seen[1] < 1.0
    assert rows.nearest_seen[2:].max() < 0.8  # unrelated noise


def test_a_predictions_table_reads_back_as_written(tmp_path):
    table, cache = partition_and_cache()
    seen, (test,) = seen_and_scored(cache, table, "all", SPLIT, {})
    n = len(test.y)
    flags = pd.Series([True] * (n - 1) + [False])
    written = pd.concat(
        [
            predictions(test, np.full(n, 0.25), seen),
            predictions(test, np.full(n, 0.75), seen, np.zeros(n), flags),
        ],
        ignore_index=True,
    )
    path = tmp_path / "predictions.tsv"
    written.to_csv(path, sep="\t", index=False)
    read = read_predictions(path)
    assert read.unfamiliar.isna().sum() == n and read.unfamiliar.sum() == n - 1
    pd.testing.assert_frame_equal(read, written, check_dtype=False)


# --- the baselines ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def one_thread():
    # Gradient boosting on a few hundred rows spends longer starting threads than fitting.
    with threadpool_limits(1):
        yield


def test_grey_histograms_are_shares_of_pixels_per_band():
    images = np.zeros((2, 4, 4), dtype=np.uint8)
    images[1, :2] = 255  # half black, half white
    h = grey_histograms(images)
    assert h.shape == (2, HISTOGRAM_BINS)
    np.testing.assert_allclose(h.sum(axis=1), 1.0)
    assert h[0, 0] == 1.0 and h[1, 0] == h[1, -1] == 0.5


def test_grey_histograms_take_slices_of_different_sizes_as_decoded():
    h = grey_histograms([np.full((3, 5), 255, np.uint8), np.zeros((7, 2), np.uint8)])
    assert h.shape == (2, HISTOGRAM_BINS) and h[0, -1] == 1.0 and h[1, 0] == 1.0
    assert grey_histograms([]).shape == (0, HISTOGRAM_BINS)


def part_of(name: str, x: np.ndarray, y: np.ndarray, grey: np.ndarray) -> Part:
    n = len(y)
    paths = np.array([f"{name}/{i}.png" for i in range(n)])
    return Part(name, x, y, paths, grey, x, np.arange(n))


def slices(n: int, seed: int, differ_in: str) -> tuple[np.ndarray, np.ndarray]:
    """32x32 noise slices with a bright square, half of each class; class 1 is 40 grey levels
    brighter (`differ_in` "brightness") or has its square on the right, not the left ("shape":
    the same grey levels in both classes)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(40, 120, (n, 32, 32))
    for i in range(n):
        top = rng.integers(2, 20)
        left = 18 if differ_in == "shape" and y[i] else int(rng.integers(2, 8))
        x[i, top : top + 10, left : left + 10] += 60
    if differ_in == "brightness":
        x += 40 * y[:, None, None]
    return x.astype(np.uint8), y


def standardised(images: np.ndarray) -> np.ndarray:
    """Each image z-scored on its own and mapped back to uint8, as the model's input after
    per-image standardisation: a global shift of brightness is gone."""
    x = images.astype(np.float64)
    mean, std = x.mean(axis=(1, 2), keepdims=True), x.std(axis=(1, 2), keepdims=True)
    return np.clip(np.round(128 + 40 * (x - mean) / std), 0, 255).astype(np.uint8)


def accuracy(prob: np.ndarray, y: np.ndarray) -> float:
    return float(((prob >= 0.5) == (y == 1)).mean())


def fitted(differ_in: str, model_input) -> tuple[dict, Part]:
    """The baselines fitted on 300 slices, and 200 other slices to score: `grey` the decoded
    slices' histograms, `x` the slices as `model_input` makes them."""
    seen_x, seen_y = slices(300, 0, differ_in)
    new_x, new_y = slices(200, 1, differ_in)
    seen = part_of("seen", model_input(seen_x), seen_y, grey_histograms(seen_x))
    scored = part_of("test", model_input(new_x), new_y, grey_histograms(new_x))
    return fit_baselines(seen, seed=0), scored


def test_every_baseline_is_fitted():
    baselines, part = fitted("brightness", standardised)
    assert list(baselines) == list(BASELINES)
    for predict in baselines.values():
        prob = predict(part)
        assert prob.shape == (len(part.y),) and ((prob >= 0) & (prob <= 1)).all()


def test_the_1nn_answers_the_label_of_the_nearest_seen_slice():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (40, 16, 16), dtype=np.uint8)
    y = rng.permutation(np.arange(40) % 2)  # labels unrelated to the pixels
    seen = part_of("seen", x, y, grey_histograms(x))
    source = rng.integers(0, 40, 30)
    copies = np.clip(x[source].astype(int) + rng.integers(-5, 6, (30, 16, 16)), 0, 255)
    copies = copies.astype(np.uint8)
    # The scored part's own labels are the opposite: the 1-NN must not read them.
    scored = part_of("test", copies, 1 - y[source], grey_histograms(copies))
    prob = fit_baselines(seen, seed=0)["pixels_1nn"](scored)
    np.testing.assert_array_equal(prob, y[source].astype(float))


def test_the_grey_histogram_baseline_reads_grey_levels_not_shape():
    baselines, part = fitted("brightness", standardised)
    assert accuracy(baselines["grey_histogram"](part), part.y) >= 0.95
    baselines, part = fitted("shape", standardised)
    assert 0.35 <= accuracy(baselines["grey_histogram"](part), part.y) <= 0.65


def test_the_shortcut_meter_reads_the_models_input_not_the_decoded_slice():
    # Brightness tells the classes apart in the decoded slices; per-image standardisation takes
    # it out of what the model sees, so the meter falls to chance while grey_histogram does not.
    baselines, part = fitted("brightness", standardised)
    assert 0.35 <= accuracy(baselines["shortcut_meter"](part), part.y) <= 0.65
    assert accuracy(baselines["grey_histogram"](part), part.y) >= 0.95
    # Left in the input, the same brightness gives the label away to the meter.
    baselines, part = fitted("brightness", lambda x: x)
    assert accuracy(baselines["shortcut_meter"](part), part.y) >= 0.95
