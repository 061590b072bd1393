"""MovieLens sources on the real releases in ../shared/data, checked against independent parsing."""

import hashlib
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from genrec.data import Dataset, prepare_dataset
from genrec.data.sources.movielens import split_title_year

from conftest import write_lines


def raw_events(path, sep):
    """Raw (user, item, rating, ts) tuples in file order, parsed without genrec."""
    rows = []
    with open(path, encoding="latin-1") as f:
        for line in f:
            u, i, r, t = line.rstrip("\n").split(sep)
            rows.append((int(u), int(i), float(r), int(t)))
    return rows


def expected_sequences(rows):
    """user -> raw items sorted by time, ties in file order (Python's sort is stable)."""
    per_user = defaultdict(list)
    for line_no, (u, i, _, t) in enumerate(rows):
        per_user[u].append((t, line_no, i))
    return {u: [i for _, _, i in sorted(events)] for u, events in per_user.items()}


def test_ml100k_counts_text_and_ids(ml100k, data_dir):
    assert (ml100k.num_users, ml100k.num_items, ml100k.num_interactions) == (943, 1682, 100000)
    items = ml100k.items.to_pylist()
    assert items[0] == {
        "item": 1,
        "raw_id": 1,
        "title": "Toy Story",
        "year": 1995,
        "genres": ["Animation", "Children's", "Comedy"],
    }
    assert ml100k.manifest["text_fields"] == ["title", "year", "genres"]
    # the "unknown" movie (raw id 267) has no year and only the unknown genre
    assert items[266]["title"] == "unknown" and items[266]["year"] is None
    # Latin-1 titles decode correctly
    assert any("é" in item["title"] for item in items)
    # raw ids are numbered in sorted order, so indices equal MovieLens ids
    assert ml100k.item_raw_ids()[1:] == list(range(1, 1683))
    assert ml100k.user_raw_ids()[1:] == list(range(1, 944))
    assert ml100k.users.column_names == ["user", "raw_id", "age", "gender", "occupation", "zip", "zip_prefix"]
    digest = hashlib.sha256((data_dir / "ml-100k" / "u.data").read_bytes()).hexdigest()
    assert ml100k.manifest["raw_files"]["u.data"]["sha256"] == digest


def test_ml100k_sequences_match_stable_time_order(ml100k, data_dir):
    expected = expected_sequences(raw_events(data_dir / "ml-100k" / "u.data", "\t"))
    seqs = ml100k.sequences
    item_ids, user_ids = ml100k.item_raw_ids(), ml100k.user_raw_ids()
    for u in range(1, ml100k.num_users + 1):
        assert [item_ids[i] for i in seqs.user(u)] == expected[user_ids[u]]
    # timestamps are non-decreasing within each user
    for u in (1, 100, 943):
        ts = seqs.timestamps[seqs.offsets[u] : seqs.offsets[u + 1]]
        assert np.all(np.diff(ts) >= 0)


def test_ml1m_sample(data_dir, tmp_path):
    raw = data_dir / "ml-1m-sample"
    rows = raw_events(raw / "ratings.dat", "::")
    ds = prepare_dataset("ml-1m", tmp_path / "ml1m", raw=raw)
    distinct_movies = len({i for _, i, _, _ in rows})
    assert (ds.num_users, ds.num_interactions) == (600, 90496)
    assert ds.num_items == distinct_movies
    assert ds.manifest["catalogue"]["items_in_metadata"] == 3883
    assert ds.manifest["catalogue"]["dropped_metadata_only_items"] == 3883 - distinct_movies
    assert ds.manifest["catalogue"]["items_without_metadata"] == 0
    users = ds.users.to_pylist()
    assert users[0] == {
        "user": 1,
        "raw_id": 1,
        "age": 1,
        "gender": "F",
        "occupation": "10",
        "zip": "48067",
        "zip_prefix": "4",
    }
    expected = expected_sequences(rows)
    item_ids = ds.item_raw_ids()
    assert [item_ids[i] for i in ds.sequences.user(600)] == expected[600]
    ratings = ds.interactions["rating"].to_numpy()
    assert ratings.dtype == np.float32 and set(np.unique(ratings)) == {1, 2, 3, 4, 5}


@pytest.mark.parametrize(
    "raw,title,year",
    [
        ("Toy Story (1995)", "Toy Story", 1995),
        ("Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)", "Shanghai Triad (Yao a yao yao dao waipo qiao)", 1995),
        ("Babylon 5 (1994) ", "Babylon 5", 1994),
        ("Fawlty Towers (1975-1979)", "Fawlty Towers", 1975),
        ("unknown", "unknown", None),
        ("Hyena Road", "Hyena Road", None),
        ("(500) Days of Summer (2009)", "(500) Days of Summer", 2009),
    ],
)
def test_split_title_year(raw, title, year):
    assert split_title_year(raw) == (title, year)


def test_ml_csv_release_with_quotes_tags_and_no_genres(tmp_path):
    raw = tmp_path / "ml-latest-small"
    write_lines(
        raw / "ratings.csv",
        ["userId,movieId,rating,timestamp", "1,10,4.0,100", "1,20,3.5,100", "2,10,5.0,50", "2,30,0.5,60"],
    )
    write_lines(
        raw / "movies.csv",
        [
            "movieId,title,genres",
            '10,"American President, The (1995)",Comedy|Drama',
            "20,Hyena Road,(no genres listed)",
            "30,Heat (1995),Action",
            "40,Unrated (2001),Drama",
        ],
    )
    write_lines(
        raw / "tags.csv",
        ["userId,movieId,tag,timestamp", "1,10,funny,1", "2,10,politics,2", "3,10,politics,3", "1,30,long,4"],
    )
    ds = prepare_dataset("ml-latest-small", tmp_path / "out", raw=raw)
    items = {row["raw_id"]: row for row in ds.items.to_pylist()}
    assert items[10]["title"] == "American President, The" and items[10]["genres"] == ["Comedy", "Drama"]
    assert items[20] == {"item": 2, "raw_id": 20, "title": "Hyena Road", "year": None, "genres": [], "tags": []}
    assert items[10]["tags"] == ["politics", "funny"]  # most frequent first
    assert 40 not in items and ds.manifest["catalogue"]["dropped_metadata_only_items"] == 1
    assert [ds.item_raw_ids()[i] for i in ds.sequences.user(1)] == [10, 20]  # tie: file order
    assert ds.interactions["rating"].to_pylist() == [4.0, 3.5, 5.0, 0.5]
    assert ds.manifest["text_fields"] == ["title", "year", "genres", "tags"]
    assert Dataset.load(tmp_path / "out").num_items == 3
    assert ds.interactions.schema.field("timestamp").type == pa.int64()
