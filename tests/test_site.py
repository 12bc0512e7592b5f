"""Several training sources and an adaptation site: sources are dealt alike into the locked test
and the folds, no near-duplicate group straddles two parts, a left-out source is held out whole,
and no adaptation draw ever reaches the site's evaluation part, the one part scored."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import table_of_groups

from vitct.data.partition import assign_folds, locked_test, run_parts
from vitct.data.site import EVAL, POOL, adaptation_draw, site_parts
from vitct.evaluation.scoring import site_evaluation_part

GROUP = "near_duplicate_group"


def two_sources() -> pd.DataFrame:
    """Source a (150 groups) and source b (60 groups, its own group numbers), each with both
    classes, the locked test and the folds dealt over both."""
    a = table_of_groups(n_groups=150, seed=0).assign(source="a")
    b = table_of_groups(n_groups=60, seed=1).assign(source="b")
    b[GROUP] += 1000
    b["path"] = "b/" + b.path
    table = pd.concat([a, b], ignore_index=True)
    table["test"] = locked_test(table, 0.2, seed=0, strategy="grouped")
    table["fold"] = assign_folds(table, 3, seed=0)
    return table


def test_groups_never_straddle_the_test_split_or_the_folds_and_every_source_is_in_each_fold():
    table = two_sources()
    assert (table.groupby(GROUP).fold.nunique() == 1).all()
    assert (table.groupby(GROUP).test.nunique() == 1).all()
    pool = table[~table.test]
    for source, rows in pool.groupby("source"):  # stratified by source and class
        share = rows.fold.value_counts(normalize=True)
        assert set(share.index) == {0, 1, 2}, source
        assert share.between(0.2, 0.47).all(), (source, share)
        assert rows.groupby("fold").label.nunique().eq(2).all(), source
    test_share = table.groupby("source").test.mean()
    assert test_share.between(0.12, 0.28).all(), test_share


@pytest.mark.parametrize("fold", ["fold0", "fold1", "fold2", "all"])
def test_a_run_on_several_sources_trains_on_each_and_holds_out_its_fold_of_each(fold):
    table = two_sources()
    parts = run_parts(table, fold, 0.25, seed=0)
    for source in ("a", "b"):
        mine = parts[table.source == source]
        assert {"train", "val", "test"} <= set(mine), (fold, source)
        assert ("held_out" in set(mine)) == (fold != "all")
    assert (table.assign(part=parts).groupby(GROUP).part.nunique() == 1).all()


def test_leaving_a_source_out_holds_out_all_of_it_and_trains_on_none_of_it():
    table = two_sources()
    parts = run_parts(table, "lo_b", 0.25, seed=0)
    assert (parts[table.source == "b"] == "held_out").all()
    assert (parts[table.source == "a"] != "held_out").all()
    assert {"train", "val", "test"} <= set(parts[table.source == "a"])


def site_table(seed: int = 0) -> pd.DataFrame:
    table = table_of_groups(n_groups=120, seed=seed)[["path", "label", GROUP]]
    table["part"] = site_parts(table, 0.5, seed=0)
    return table


def test_the_site_is_split_by_group_into_a_pool_and_an_evaluation_part_of_both_classes():
    site = site_table()
    assert set(site.part) == {POOL, EVAL}
    assert (site.groupby(GROUP).part.nunique() == 1).all()
    assert site.groupby("part").label.nunique().eq(2).all()
    assert (site.part == POOL).mean() == pytest.approx(0.5, abs=0.06)


@pytest.mark.parametrize("n", [10, 25, 50, 100, "all"])
def test_no_draw_ever_touches_the_evaluation_part_that_scoring_reads(n, tmp_path):
    site = site_table()
    path = tmp_path / "site_split.tsv"
    site.to_csv(path, sep="\t", index=False)
    scored = site_evaluation_part(path, "ucsd")["ucsd"]
    assert scored == set(site.path[site.part == EVAL])
    eval_groups = set(site[GROUP][site.part == EVAL])
    for seed in range(5):
        draw = adaptation_draw(site, n, seed)
        assert not scored & set(draw.path), (n, seed)
        assert not eval_groups & set(draw[GROUP]), (n, seed)
        assert set(draw.label) == {0, 1}
        if n == "all":
            assert set(draw.path) == set(site.path[site.part == POOL])
        else:
            assert n <= len(draw) <= n + 2 * 5  # whole groups: at most a group over per class


def test_draws_differ_by_seed_and_are_the_same_for_the_same_seed():
    site = site_table()
    first = adaptation_draw(site, 25, 1).path.tolist()
    assert first == adaptation_draw(site, 25, 1).path.tolist()
    assert first != adaptation_draw(site, 25, 2).path.tolist()
