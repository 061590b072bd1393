"""Filters against brute-force Python versions."""

import numpy as np
import pytest

from genrec.data import Filters, prepare_dataset
from genrec.errors import ConfigError, DataError

from conftest import write_lines


def brute_k_core(events, user_core, item_core):
    events = list(events)
    while True:
        users, items = {}, {}
        for u, i in events:
            users[u] = users.get(u, 0) + 1
            items[i] = items.get(i, 0) + 1
        kept = [(u, i) for u, i in events if users[u] >= user_core and items[i] >= item_core]
        if len(kept) == len(events):
            return kept
        events = kept


def test_k_core_matches_brute_force():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 60, 800)
    items = (rng.pareto(1.2, 800) * 5).astype(np.int64) % 90
    keep, report = Filters(user_core=5, item_core=4).apply(users, items, None)
    expected = brute_k_core(zip(users.tolist(), items.tolist()), 5, 4)
    assert list(zip(users[keep].tolist(), items[keep].tolist())) == expected
    assert report == {"raw": 800, "after_k_core": len(expected)}
    assert 0 < len(expected) < 800


def test_core_once_counts_the_raw_events_in_one_pass():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 60, 800)
    items = (rng.pareto(1.2, 800) * 5).astype(np.int64) % 90
    keep, _ = Filters(user_core=5, item_core=4, core_once=True).apply(users, items, None)
    user_counts, item_counts = np.bincount(users), np.bincount(items)
    expected = np.flatnonzero((user_counts[users] >= 5) & (item_counts[items] >= 4))
    assert keep.tolist() == expected.tolist()
    iterated, _ = Filters(user_core=5, item_core=4).apply(users, items, None)
    assert set(iterated.tolist()) < set(keep.tolist())  # one pass keeps a superset of the k-core


def test_rating_threshold_then_dedup_keeps_first_event():
    users = np.array([0, 0, 0, 1, 1])
    items = np.array([5, 5, 6, 5, 5])
    ratings = np.array([4.0, 5.0, 1.0, 3.0, 4.0])
    keep, report = Filters(min_rating=3.5, dedup=True).apply(users, items, ratings)
    assert keep.tolist() == [0, 4]
    assert report == {"raw": 5, "after_min_rating": 3, "after_dedup": 2}


def test_filters_in_prepare_and_manifest(tmp_path):
    write_lines(tmp_path / "e.csv", ["u,i,t,r", "a,x,1,5", "a,y,2,1", "a,x,3,5", "b,x,1,4", "b,z,2,4"])
    ds = prepare_dataset(
        "csv",
        tmp_path / "ds",
        raw=tmp_path / "e.csv",
        user_col="u",
        item_col="i",
        time_col="t",
        rating_col="r",
        filters=Filters(min_rating=4, dedup=True),
    )
    assert ds.num_interactions == 3 and ds.num_items == 2
    assert ds.manifest["filters"] == {
        "min_rating": 4.0,
        "dedup": True,
        "user_core": 0,
        "item_core": 0,
        "core_once": False,
    }
    assert ds.manifest["filter_report"] == {"raw": 5, "after_min_rating": 4, "after_dedup": 3}
    assert ds.user_raw_ids() == [None, "a", "b"]


def test_empty_after_filtering_and_bad_filters(tmp_path):
    write_lines(tmp_path / "e.csv", ["user_id,item_id,timestamp", "1,1,1", "2,2,2"])
    with pytest.raises(DataError, match="no interactions left after filtering"):
        prepare_dataset("csv", tmp_path / "ds", raw=tmp_path / "e.csv", filters=Filters(user_core=2))
    assert not (tmp_path / "ds").exists()
    with pytest.raises(ConfigError, match="no rating column"):
        prepare_dataset("csv", tmp_path / "ds", raw=tmp_path / "e.csv", filters=Filters(min_rating=3))
    with pytest.raises(ConfigError, match="user_core"):
        Filters(user_core=-1)
