"""Prepared datasets in ../shared/data: LETTER sequences, RecBole atomic files, MiniOneRec CSVs.

Counts and splits are checked against the files read independently here.
"""

import ast
import csv
import json

import numpy as np
import pytest

from genrec.data import leave_one_out, make_split, prepare_dataset


@pytest.fixture(scope="module")
def beauty(data_dir, tmp_path_factory):
    return prepare_dataset("letter", tmp_path_factory.mktemp("ds") / "beauty", raw=data_dir / "amazon-beauty")


def test_letter_beauty_counts_order_and_sids(beauty, data_dir):
    raw = json.loads((data_dir / "amazon-beauty" / "Beauty.inter.json").read_text())
    assert (beauty.num_users, beauty.num_items, beauty.num_interactions) == (22363, 12101, 198502)
    assert not beauty.has_timestamps and beauty.split_cases is None
    items, users = beauty.item_raw_ids(), beauty.user_raw_ids()
    split = leave_one_out(beauty.sequences)
    assert len(split.test) == 22363
    for c in range(0, len(split.test), 997):
        given = raw[str(users[split.test.users[c]])]
        assert items[split.test.targets[c]] == given[-1] and items[split.valid.targets[c]] == given[-2]
        assert [items[i] for i in beauty.sequences.user(split.test.users[c])] == given
    sids = json.loads((data_dir / "amazon-beauty" / "Beauty.index.json").read_text())
    table = beauty.items.to_pylist()
    assert all(row["sid"] == sids[str(row["raw_id"])] for row in table[::101])


def read_rows(path):
    with open(path) as f:
        next(f)
        return [(u, h.split(), t) for u, h, t in (line.rstrip("\n").split("\t") for line in f)]


def test_recbole_scientific_keeps_its_split(data_dir, tmp_path):
    folder = data_dir / "amazon-scientific"
    ds = prepare_dataset("recbole", tmp_path / "sci", raw=folder)
    test_rows = read_rows(folder / "Scientific.test.inter")
    assert ds.num_users == len(test_rows) == 2928 and ds.num_items == 1585
    assert ds.num_interactions == sum(len(h) + 1 for _, h, _ in test_rows)
    asin = dict(line.split("\t")[::-1] for line in (folder / "Scientific.item2index").read_text().splitlines())
    asin = {k.strip(): v for k, v in asin.items()}
    name = {
        v.strip(): k
        for k, v in (line.split("\t") for line in (folder / "Scientific.user2index").read_text().splitlines())
    }
    split = make_split(ds.sequences, predefined=ds.split_cases)
    assert split.protocol == "predefined"
    items, users = ds.item_raw_ids(), ds.user_raw_ids()
    by_user = {name[u]: (h, t) for u, h, t in test_rows}
    for c in range(0, len(split.test), 50):
        history, target = by_user[users[split.test.users[c]]]
        shown = split.sequences.items[split.test.history_start[c] : split.test.history_end[c]]
        assert [items[i] for i in shown] == [asin[i] for i in history] and items[split.test.targets[c]] == asin[target]
    # UniSRec's split is leave-one-out on the rebuilt sequences
    loo = leave_one_out(ds.sequences)
    order = np.argsort(split.test.users)
    assert np.array_equal(split.test.targets[order], loo.test.targets)
    assert np.array_equal(split.valid.targets[np.argsort(split.valid.users)], loo.valid.targets)
    assert ds.items["text"][0].as_py().startswith("Gorilla Original Gorilla Glue")


@pytest.mark.parametrize("name", ["Industrial_and_Scientific", "Office_Products"])
def test_minionerec_keeps_its_windows_and_catalogue(data_dir, tmp_path, name):
    folder = data_dir / "minionerec"
    ds = prepare_dataset("minionerec", tmp_path / name, raw=folder, name=name)
    catalogue = json.loads((folder / f"{name}.item.json").read_text())
    assert ds.num_items == len(catalogue) and ds.manifest["catalogue"]["dropped_metadata_only_items"] == 0
    assert ds.item_raw_ids()[1:] == sorted(int(k) for k in catalogue)
    split = make_split(ds.sequences, predefined=ds.split_cases)
    items = ds.item_raw_ids()
    for which in ("valid", "test"):
        with open(folder / f"{name}.{which}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        cases = split.cases(which)
        assert len(cases) == len(rows) == ds.manifest["predefined_split"][which]
        for c in range(0, len(rows), 37):
            history = split.sequences.items[cases.history_start[c] : cases.history_end[c]]
            assert [items[i] for i in history] == ast.literal_eval(rows[c]["history_item_id"])
            assert items[cases.targets[c]] == int(rows[c]["item_id"])
            assert ds.user_raw_ids()[cases.users[c]] == rows[c]["user_id"]
    sids = json.loads((folder / f"{name}.index.json").read_text())
    assert all(row["sid"] == sids[str(row["raw_id"])] for row in ds.items.to_pylist()[::53])
    assert ds.manifest["preprocessing"]["splits_present"] == ["valid", "test"]
