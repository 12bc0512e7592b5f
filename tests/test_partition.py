"""The partition: the locked test split, the grouped folds, and every run's parts (train, inner
validation, held-out fold, locked test), dealt by group and stratified by class."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from conftest import table_of_groups

from vitct.data.partition import (
    TEST_FOLD,
    SplitError,
    assign_folds,
    check_runs,
    deal_groups,
    fold_index,
    locked_test,
    run_data,
    run_parts,
)

GROUP = "near_duplicate_group"
MAX_GROUP = 5  # table_of_groups deals groups of 1 to 5 slices


def folded(n_groups: int = 150, n_folds: int = 3) -> pd.DataFrame:
    table = table_of_groups(n_groups=n_groups)
    table["fold"] = assign_folds(table, n_folds, seed=0)
    return table


def singletons(covid: int, non_covid: int) -> pd.DataFrame:
    """One row per image, each its own group and its own exact copy (sha256)."""
    classes = ["COVID"] * covid + ["non-COVID"] * non_covid
    n = len(classes)
    return pd.DataFrame(
        {
            "path": [f"{c}/{i}.png" for i, c in enumerate(classes)],
            "class_dir": classes,
            "label": [int(c == "COVID") for c in classes],
            "sha256": [f"{i:064x}" for i in range(n)],
            GROUP: range(n),
        }
    )


def advised(message: str, setting: str) -> float:
    found = re.search(rf"set {re.escape(setting)}: ([0-9.]+)", message)
    assert found, message
    return float(found.group(1))


def straddling(table: pd.DataFrame, part: pd.Series, column: str) -> int:
    """Groups of `column` whose rows fall in more than one part."""
    return int((table.assign(part=part.to_numpy()).groupby(column).part.nunique() > 1).sum())


# --- deal_groups ------------------------------------------------------------------------------


def test_deal_groups_keeps_each_group_in_one_part():
    table = table_of_groups(n_groups=200)
    part = deal_groups(table, {"a": 0.5, "b": 0.3, "c": 0.2}, seed=3, group_column=GROUP)
    assert set(part) == {"a", "b", "c"}
    assert straddling(table, part, GROUP) == 0


def test_deal_groups_holds_each_share_per_class_within_a_group():
    table = table_of_groups(n_groups=200)
    shares = {"a": 0.7, "b": 0.3}
    for seed in range(5):
        counts = pd.crosstab(deal_groups(table, shares, seed, GROUP), table.label)
        totals = table.label.value_counts()
        for name, share in shares.items():
            for label in (0, 1):
                # Whole groups are dealt, so a part may miss its target by up to one group.
                assert abs(counts.loc[name, label] - share * totals[label]) <= MAX_GROUP


def test_deal_groups_gives_nothing_to_a_part_with_no_share_and_depends_on_the_seed():
    table = table_of_groups(n_groups=100)
    part = deal_groups(table, {"a": 1.0, "none": 0.0}, seed=0, group_column=GROUP)
    assert (part == "a").all()
    shares = {"a": 0.5, "b": 0.5}
    first = deal_groups(table, shares, 1, GROUP)
    assert first.equals(deal_groups(table, shares, 1, GROUP))
    assert not first.equals(deal_groups(table, shares, 2, GROUP))


def test_a_group_holding_both_labels_stays_whole():
    table = table_of_groups(n_groups=60)
    mixed = table[GROUP] == 1
    assert mixed.sum() == 4
    table.loc[mixed.idxmax(), "label"] = 0  # group 1 is COVID: one of its four slices is not
    for seed in range(10):
        part = deal_groups(table, {"a": 0.5, "b": 0.5}, seed, GROUP)
        assert part[mixed].nunique() == 1


# --- the locked test split --------------------------------------------------------------------


def with_copies(n_groups: int = 120, seed: int = 0) -> pd.DataFrame:
    """table_of_groups with a sha256 per slice; the first two slices of every third group are
    byte-identical copies."""
    table = table_of_groups(n_groups=n_groups, seed=seed)
    table["sha256"] = [f"h{i}" for i in range(len(table))]
    for _, rows in table.groupby(GROUP):
        if rows[GROUP].iloc[0] % 3 == 0 and len(rows) > 1:
            table.loc[rows.index[1], "sha256"] = table.loc[rows.index[0], "sha256"]
    return table


def test_a_grouped_locked_test_keeps_near_duplicate_groups_on_one_side():
    table = with_copies()
    for seed in range(5):
        test = locked_test(table, 0.2, seed, "grouped")
        assert straddling(table, test, GROUP) == 0
        share = table[test].groupby("label").size() / table.groupby("label").size()
        assert share.between(0.15, 0.25).all(), share


def test_a_random_locked_test_keeps_only_exact_copies_together():
    table = with_copies()
    test = locked_test(table, 0.2, 0, "random")
    assert straddling(table, test, "sha256") == 0
    # Near-duplicates are dealt one by one: many groups fall on both sides.
    assert straddling(table, test, GROUP) >= 5
    assert locked_test(table, 0.2, 0, "random").equals(test)


def test_a_test_split_too_small_for_a_class_advises_the_least_share_that_fills_it():
    table = singletons(40, 40)
    with pytest.raises(SplitError) as stopped:
        locked_test(table, 0.01, 0, "grouped")
    message = str(stopped.value)
    assert "0 COVID images in the test part" in message
    assert "pool 40 COVID, 40 non-COVID; test 0 COVID, 0 non-COVID" in message
    assert "split.test 0.01 leaves too few for 40 COVID images" in message
    value = advised(message, "split.test")
    assert value == pytest.approx(0.02)
    assert locked_test(table, value, 0, "grouped").sum() >= 2  # the advice works


def test_a_class_too_rare_for_two_parts_asks_for_images():
    with pytest.raises(SplitError, match="only 1 usable non-COVID images.*add images"):
        locked_test(singletons(40, 1), 0.2, 0, "grouped")


def test_a_class_in_one_indivisible_group_asks_for_images_not_a_share():
    table = singletons(40, 3)
    table.loc[table.class_dir == "non-COVID", GROUP] = -1  # three near-copies: one group
    with pytest.raises(SplitError) as stopped:
        locked_test(table, 0.2, 0, "grouped")
    message = str(stopped.value)
    assert "for 3 non-COVID images; add images" in message
    assert "set split.test" not in message
    locked_test(table, 0.2, 0, "random")  # three files, dealt one by one, fill both parts


# --- the folds --------------------------------------------------------------------------------


def test_folds_keep_groups_whole_leave_the_test_split_out_and_balance_classes():
    table = table_of_groups(n_groups=150)
    folds = assign_folds(table, 4, seed=0)
    assert (folds[table.test] == TEST_FOLD).all()
    pool = table.assign(fold=folds)[~table.test]
    assert set(pool.fold) == {0, 1, 2, 3}
    assert straddling(pool, pool.fold, GROUP) == 0
    assert pool.groupby("fold").label.mean().between(0.35, 0.65).all()


def test_folds_depend_on_the_seed_not_on_the_row_order():
    table = table_of_groups(n_groups=150)
    shuffled = table.sample(frac=1.0, random_state=1)
    a = assign_folds(table, 3, 5)
    assert a.equals(assign_folds(shuffled, 3, 5).sort_index())
    assert not a.equals(assign_folds(table, 3, 6))


@pytest.mark.parametrize("n_folds", [0, 1])
def test_fewer_than_two_folds_put_the_whole_pool_in_fold_0(n_folds):
    table = table_of_groups(n_groups=30)
    folds = assign_folds(table, n_folds, seed=0)
    assert (folds[~table.test] == 0).all() and (folds[table.test] == TEST_FOLD).all()


def test_too_few_groups_of_a_class_for_the_folds_names_the_class_and_the_setting():
    table = table_of_groups(n_groups=40)
    covid_groups = table[(table.label == 1) & ~table.test][GROUP].unique()
    # Every COVID image outside the test split in two groups, non-COVID in 16.
    table.loc[table[GROUP].isin(covid_groups), GROUP] = np.where(
        table.loc[table[GROUP].isin(covid_groups), GROUP] % 4 == 1, -1, -2
    )
    with pytest.raises(SplitError) as stopped:
        assign_folds(table, 3, seed=0)
    message = str(stopped.value)
    assert "evaluation.folds is 3" in message
    assert "only 2 near-duplicate groups of class COVID" in message
    assert "lower evaluation.folds to 2 or less" in message
    assert (assign_folds(table, 2, seed=0)[~table.test] >= 0).all()


def test_one_group_of_a_class_is_not_advised_the_folds_already_set():
    table = table_of_groups(n_groups=40)
    table.loc[(table.label == 1) & ~table.test, GROUP] = -1  # one COVID group outside the test
    with pytest.raises(SplitError) as stopped:
        assign_folds(table, 2, seed=0)
    message = str(stopped.value)
    assert "only 1 near-duplicate groups of class COVID" in message
    assert "lower evaluation.folds to 2" not in message  # 2 is what failed
    assert "set evaluation.folds: 0 (no cross-validation) or add images of that class" in message


def test_fold_names_are_all_fold_k_a_left_out_source_or_a_draw():
    assert (fold_index("all"), fold_index("fold0"), fold_index("fold12")) == (None, 0, 12)
    assert (fold_index("lo_ucsd"), fold_index("draw2")) == (None, None)
    for wrong in ("fold", "foldx", "1", "test", "drawx"):
        with pytest.raises(ValueError, match="'all', fold0, fold1, ..., lo_SOURCE or draw0"):
            fold_index(wrong)


# --- a run's parts ----------------------------------------------------------------------------


def test_a_run_on_all_trains_on_the_whole_pool_and_is_scored_on_the_locked_test():
    table = folded()
    parts = run_parts(table, "all", 0.25, seed=0)
    assert set(parts) == {"train", "val", "test"}
    assert ((parts == "test") == table.test).all()


def test_a_run_on_a_fold_holds_out_exactly_that_fold():
    table = folded()
    parts = run_parts(table, "fold1", 0.25, seed=0)
    assert set(parts) == {"train", "val", "held_out", "test"}
    assert ((parts == "held_out") == (table.fold == 1)).all()
    assert ((parts == "test") == table.test).all()
    assert table.fold[parts.isin(["train", "val"])].isin([0, 2]).all()


@pytest.mark.parametrize("fold", ["all", "fold0", "fold2"])
def test_the_inner_validation_split_is_carved_by_group_from_the_training_images(fold):
    table = folded()
    parts = run_parts(table, fold, 0.25, seed=0)
    assert straddling(table, parts, GROUP) == 0
    training = table[parts.isin(["train", "val"])]
    val = parts[training.index] == "val"
    for label in (0, 1):
        of_class = training.label == label
        assert abs(val[of_class].sum() - 0.25 * of_class.sum()) <= MAX_GROUP


def test_the_inner_split_is_seeded():
    table = folded()
    parts = run_parts(table, "fold0", 0.25, seed=4)
    assert parts.equals(run_parts(table, "fold0", 0.25, seed=4))
    assert not parts.equals(run_parts(table, "fold0", 0.25, seed=5))


@pytest.mark.parametrize("fold", ["all", "fold1"])
def test_the_inner_split_never_reads_a_held_out_or_test_label(fold):
    table = folded()
    parts = run_parts(table, fold, 0.25, seed=0)
    scored = parts.isin(["held_out", "test"])
    flipped = table.copy()
    flipped.loc[scored, "label"] = 1 - table.label[scored]
    flipped.loc[scored, "class_dir"] = np.where(flipped.label[scored] == 1, "COVID", "non-COVID")
    assert (flipped.label != table.label).sum() == scored.sum() > 0
    assert run_parts(flipped, fold, 0.25, seed=0).equals(parts)


@pytest.mark.parametrize("fold", ["all", "fold1"])
def test_a_validation_split_too_small_advises_the_least_share_that_fills_it(fold):
    table = folded(n_groups=90)
    with pytest.raises(SplitError) as stopped:
        run_parts(table, fold, 0.01, seed=0)
    message = str(stopped.value)
    assert "in the val part" in message and f"of the run on {fold}" in message
    assert "split.val 0.01 leaves too few" in message
    value = advised(message, "split.val")
    run_parts(table, fold, value, seed=0)  # the advice works...
    with pytest.raises(SplitError):  # ...and is the least change, in steps of 0.01
        run_parts(table, fold, round(value - 0.01, 4), seed=0)


def test_a_class_missing_from_a_runs_training_images_asks_for_images():
    table = folded(n_groups=90)
    covid_pool = (table.label == 1) & ~table.test
    table.loc[covid_pool, "fold"] = 1  # fold 1 holds every COVID image of the pool
    with pytest.raises(SplitError, match="of the run on fold1: only 0 usable COVID.*add images"):
        run_parts(table, "fold1", 0.25, seed=0)


def test_check_runs_stops_on_the_first_run_that_lacks_a_class():
    table = folded(n_groups=90)
    table.loc[(table.label == 1) & ~table.test, "fold"] = 1
    check_runs(table, ["all", "fold0", "fold2"], 0.25, seed=0)
    with pytest.raises(SplitError, match="of the run on fold1"):
        check_runs(table, ["all", "fold0", "fold1", "fold2"], 0.25, seed=0)


# --- a run's data -----------------------------------------------------------------------------


def cache_of(table: pd.DataFrame, parts: pd.Series) -> dict:
    """An image cache of the table's images in reverse order; training images bright (200),
    every other image dark (10), so that statistics over other parts show."""
    order = table.index[::-1]
    n = len(order)
    x = np.where(parts[order].to_numpy() == "train", 200, 10).astype(np.uint8)
    x = np.broadcast_to(x[:, None, None], (n, 4, 4)).copy()
    x[:, 0, 0] += np.arange(n, dtype=np.uint8) % 7  # each image its own pixels
    return {
        "paths": table.path[order].to_numpy(),
        "x": x,
        "y": table.label[order].to_numpy(),
        "histograms": np.arange(n)[:, None] * np.ones((1, 32)),
        "thumbnails": x[:, :2, :2],
    }


def test_run_data_reads_the_wanted_parts_in_table_order_and_the_training_statistics():
    table = folded(n_groups=60)
    parts = run_parts(table, "fold0", 0.25, seed=0)
    cache = cache_of(table, parts)
    data = run_data(cache, table, parts, ("train", "val"))
    fields = ("x", "y", "paths", "grey", "thumbnails", "groups", "sources")
    assert set(data) == {f"{p}_{f}" for p in ("train", "val") for f in fields} | {"mean", "std"}
    train = table[parts == "train"]
    np.testing.assert_array_equal(data["train_paths"], train.path)
    np.testing.assert_array_equal(data["train_y"], train.label)
    np.testing.assert_array_equal(data["train_groups"], train[GROUP])
    row = {p: i for i, p in enumerate(cache["paths"])}
    rows = [row[p] for p in train.path]
    np.testing.assert_array_equal(data["train_x"], cache["x"][rows])
    np.testing.assert_array_equal(data["train_grey"], cache["histograms"][rows])
    pixels = cache["x"][rows].astype(np.float64) / 255
    assert data["mean"] == pytest.approx(pixels.mean()) and data["mean"] > 0.75
    assert data["std"] == pytest.approx(pixels.std())


def test_run_data_without_train_has_no_statistics_and_reads_no_other_part():
    table = folded(n_groups=60)
    parts = run_parts(table, "fold0", 0.25, seed=0)
    data = run_data(cache_of(table, parts), table, parts, ("held_out",))
    assert {k.split("_x")[0] for k in data if k.endswith("_x")} == {"held_out"}
    assert "mean" not in data and len(data["held_out_y"]) == (parts == "held_out").sum()


def test_run_data_refuses_a_cache_that_lacks_an_image():
    table = folded(n_groups=30)
    parts = run_parts(table, "all", 0.25, seed=0)
    cache = cache_of(table, parts)
    cache["paths"] = cache["paths"].astype(object)
    missing = table.path[parts == "train"].iloc[0]
    cache["paths"][list(cache["paths"]).index(missing)] = "elsewhere.png"
    with pytest.raises(ValueError, match=f"no row for 1 of the images.*{re.escape(missing)}"):
        run_data(cache, table, parts, ("train",))
