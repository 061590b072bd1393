"""Typed side features: each source's features on the real files, vocabularies fitted on training
rows only, out-of-vocabulary and missing values, and bad input."""

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genrec.data import Dataset, leave_one_out, make_split, prepare_dataset
from genrec.data.feature_tables import MISSING, OOV, fit_features
from genrec.errors import ConfigError, DataError

from conftest import write_lines


def specs_of(ds, side):
    return {s.name: (s.type, s.vocab_size, s.coverage) for s in ds.features[side]}


# ---- each source's features, on the real files -------------------------------------------------------
def test_ml100k_features_match_the_raw_files(ml100k, data_dir):
    rows = [line.split("|") for line in (data_dir / "ml-100k" / "u.item").read_text("latin-1").splitlines()]
    genres_used = {g for r in rows for g, flag in enumerate(r[5:]) if flag == "1"}
    with_year = sum(r[1].rstrip().endswith(")") and r[1].rstrip()[-5:-1].isdigit() for r in rows)
    users = [line.split("|") for line in (data_dir / "ml-100k" / "u.user").read_text("latin-1").splitlines()]
    assert specs_of(ml100k, "item") == {
        "genres": ("array", len(genres_used), 1.0),
        "year": ("continuous", None, round(with_year / len(rows), 4)),
    }
    assert specs_of(ml100k, "user") == {
        "age": ("sparse", len({u[1] for u in users}), 1.0),
        "gender": ("sparse", 2, 1.0),
        "occupation": ("sparse", len({u[3] for u in users}), 1.0),
        "zip_prefix": ("sparse", len({u[4][0] for u in users}), 1.0),
    }
    assert ml100k.feature("item", "year").normalisation == "standard"


def test_ml1m_sample_features(data_dir, tmp_path):
    ds = prepare_dataset("ml-1m", tmp_path / "ml1m", raw=data_dir / "ml-1m-sample")
    users = [line.split("::") for line in (data_dir / "ml-1m-sample" / "users.dat").read_text("latin-1").splitlines()]
    rated = {u[0] for u in users if int(u[0]) <= 600}  # ratings.dat holds users 1..600
    assert specs_of(ds, "user")["age"] == ("sparse", len({u[2] for u in users if u[0] in rated}), 1.0)
    assert specs_of(ds, "user")["occupation"] == ("sparse", len({u[3] for u in users if u[0] in rated}), 1.0)
    assert specs_of(ds, "item")["genres"][0] == "array" and specs_of(ds, "item")["year"][2] == 1.0
    tables = fit_features(ds, leave_one_out(ds.sequences).train)
    age = tables.user["age"]
    assert age.ids.shape == (601,) and age.ids[0] == MISSING and (age.ids[1:] >= 2).all()
    assert sorted(age.vocab) == sorted({int(u[2]) for u in users if u[0] in rated})


def test_minionerec_office_brand(data_dir, tmp_path):
    ds = prepare_dataset("minionerec", tmp_path / "office", raw=data_dir / "minionerec", name="Office_Products")
    items = json.loads((data_dir / "minionerec" / "Office_Products.item.json").read_text())
    brands = Counter(v["brand"].strip() for v in items.values() if v.get("brand", "").strip())
    # categories is empty for every item in this release: not declared
    assert specs_of(ds, "item") == {"brand": ("sparse", len(brands), round(sum(brands.values()) / len(items), 4))}
    tables = fit_features(ds, make_split(ds.sequences, predefined=ds.split_cases).train)
    brand = tables.item["brand"]
    raw_ids = ds.item_raw_ids()
    top = brand.vocab[0]
    assert brand.ids[raw_ids.index(next(int(k) for k, v in items.items() if v["brand"] == top))] == 2


def test_amazon_beauty_has_no_features(data_dir, tmp_path):
    ds = prepare_dataset("letter", tmp_path / "beauty", raw=data_dir / "amazon-beauty")
    assert ds.features == {"item": [], "user": []}
    assert fit_features(ds, None).item == {}


# ---- fitting on training only ---------------------------------------------------------------------------
def tiny_dataset(tmp_path, item_lines, features=("brand:sparse", "tags:array", "price:continuous:log-standard")):
    """Users a and b; leave-one-out holds out each one's last two items (c3/c4 for a, c5/c6 for b)."""
    write_lines(
        tmp_path / "events.csv",
        ["user_id,item_id,timestamp"]
        + [f"a,c{i},{i}" for i in (1, 2, 3, 4)]
        + [f"b,c{i},{10 + i}" for i in (1, 2, 5, 6)],
    )
    write_lines(tmp_path / "items.csv", ["item_id,title,brand,tags,price", *item_lines])
    return with_item_table("csv", tmp_path / "events.csv", tmp_path / "items.csv", features)


def with_item_table(source, events, items, features, **options):
    """The dataset of `events` with the item table `items` and its `features` ("col:type")."""
    out = events.parent / "ds"
    return prepare_dataset(source, out, raw=events, items=str(items), item_features=list(features), **options)


ITEMS = [
    "c1,one,Acme,red|big,1.0",
    "c2,two,Acme,red,3.0",
    "c3,three,Zeta,blue|red,1000",  # Zeta and blue only on held-out items
    "c4,four,,,",  # nothing known: missing everywhere
    "c5,five,Acme,red|green,",
    "c6,six,Zeta,green,7",
]


def test_vocabulary_is_fitted_on_training_items_only(tmp_path):
    ds = tiny_dataset(tmp_path, ITEMS)
    split = leave_one_out(ds.sequences)
    assert sorted(ds.item_raw_ids()[i] for i in np.unique(split.train.items)) == ["c1", "c2"]
    # the manifest describes the whole table ...
    assert specs_of(ds, "item") == {
        "brand": ("sparse", 2, round(5 / 6, 4)),
        "tags": ("array", 4, round(5 / 6, 4)),
        "price": ("continuous", None, round(4 / 6, 4)),
    }
    tables = fit_features(ds, split.train)
    row = {raw: i for i, raw in enumerate(ds.item_raw_ids()) if raw is not None}
    brand, tags, price = tables.item["brand"], tables.item["tags"], tables.item["price"]
    # ... the vocabulary only the training items: Zeta, blue and green are out of vocabulary
    assert brand.vocab == ["Acme"] and brand.num_embeddings == 3
    assert brand.ids.tolist() == [MISSING, 2, 2, OOV, MISSING, 2, OOV]
    assert [row["c1"], row["c6"]] == [1, 6]
    assert tags.vocab == ["red", "big"]  # most frequent first
    assert tags.offsets.tolist() == [0, 0, 2, 3, 5, 5, 7, 8]
    assert tags.values.tolist() == [2, 3, 2, OOV, 2, 2, OOV, OOV]
    assert tags.padded(1).tolist() == [[0], [2], [2], [OOV], [0], [2], [OOV]]
    # normalisation statistics from c1 and c2 only: log1p(1), log1p(3)
    fit = np.log1p([1.0, 3.0])
    assert price.mean == pytest.approx(fit.mean()) and price.std == pytest.approx(fit.std())
    assert price.present.tolist() == [False, True, True, True, False, False, True]
    assert price.values[row["c3"]] == pytest.approx((np.log1p(1000) - fit.mean()) / fit.std(), rel=1e-5)
    assert price.values[0] == price.values[row["c4"]] == 0.0 and price.values.dtype == np.float32
    # without a split every row counts
    assert sorted(fit_features(ds, None).item["brand"].vocab) == ["Acme", "Zeta"]
    assert fit_features(ds, split.train, min_count=3).item["brand"].vocab == []


def test_unknown_feature_names_list_what_the_dataset_has(tmp_path):
    ds = tiny_dataset(tmp_path, ITEMS)
    with pytest.raises(ConfigError, match=r"no item feature 'colour'; its item features: brand \(sparse\), tags"):
        fit_features(ds, None, item=["colour"])
    with pytest.raises(ConfigError, match="no user feature 'age'; its user features: none"):
        fit_features(ds, None, user=["age"])
    with pytest.raises(ConfigError, match="'brand' is named twice"):
        fit_features(ds, None, item=["brand", "brand"])
    assert list(fit_features(ds, None, item=["price"], user=[]).item) == ["price"]


def test_datasets_prepared_before_features_still_load(tmp_path):
    ds = tiny_dataset(tmp_path, ITEMS)
    manifest = json.loads((ds.path / "manifest.json").read_text())
    manifest["format_version"] = 1
    del manifest["features"]
    (ds.path / "manifest.json").write_text(json.dumps(manifest))
    old = Dataset.load(ds.path)
    assert old.features == {"item": [], "user": []} and old.summary()["item_features"] is None
    manifest["format_version"] = 99
    (ds.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="format version 99"):
        Dataset.load(ds.path)


# ---- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "features, lines, error, message",
    [
        (["brand:sparse", "brand:array"], ITEMS, ConfigError, "'brand' is declared twice"),
        (
            ["title:continuous"],
            ITEMS,
            DataError,
            r"items\.csv, column 'title' holds string values \(e\.g\. 'one' on line 2\)",
        ),
        (
            ["price:continuous"],
            [*ITEMS[:2], "c3,three,Zeta,blue,inf", *ITEMS[3:]],
            DataError,
            r"items\.csv, column 'price', line 4: value inf is not a finite number",
        ),
        (
            ["price:continuous:log-standard"],
            [*ITEMS[:2], "c3,three,Zeta,blue,-2", *ITEMS[3:]],
            DataError,
            "line 4: value -2.0 is negative",
        ),
        (
            ["colour:sparse"],
            ITEMS,
            DataError,
            r"items\.csv: no column 'colour' for the item feature; its columns are 'item_id', 'title'",
        ),
        (
            ["brand:vector"],
            ITEMS,
            ConfigError,
            "unknown type 'vector'; valid types: sparse, array, continuous, embedding",
        ),
        (["price:continuous:minmax"], ITEMS, ConfigError, "unknown normalisation 'minmax'"),
        (["brand"], ITEMS, ConfigError, "expected COLUMN:TYPE"),
        (["emb:embedding"], ITEMS, ConfigError, "genrec data features DATASET --from-embeddings"),
    ],
)
def test_bad_feature_declarations(tmp_path, features, lines, error, message):
    with pytest.raises(error, match=message):
        tiny_dataset(tmp_path, lines, features)
    assert not (tmp_path / "ds").exists()


def test_bad_feature_values_in_parquet_tables(tmp_path):
    pq.write_table(
        pa.table({"user_id": [1, 1, 2], "item_id": [1, 2, 1], "timestamp": [1, 2, 3]}), tmp_path / "e.parquet"
    )

    def prepare(items, *features, **options):
        pq.write_table(items, tmp_path / "items.parquet")
        return with_item_table(
            "parquet", tmp_path / "e.parquet", tmp_path / "items.parquet", features, overwrite=True, **options
        )

    with pytest.raises(DataError, match=r"column 'score', row 2: value nan is not a finite number"):
        prepare(pa.table({"item_id": [1, 2], "score": [0.5, float("nan")]}), "score:continuous")
    with pytest.raises(DataError, match=r"column 'kinds' has type list<\w+: string>; .*\(declare it array\)"):
        prepare(pa.table({"item_id": [1, 2], "kinds": [["a"], ["b", "c"]]}), "kinds:sparse")
    with pytest.raises(DataError, match="column 'score' has type double; an array feature holds a list"):
        prepare(pa.table({"item_id": [1, 2], "score": [0.5, 1.0]}), "score:array")
    # a feature missing for some items is allowed: the missing bucket
    ds = prepare(pa.table({"item_id": [1, 2], "kinds": [["a"], None], "n": [3, None]}), "kinds:array", "n:continuous")
    assert specs_of(ds, "item") == {"kinds": ("array", 1, 0.5), "n": ("continuous", None, 0.5)}
    tables = fit_features(ds, None)
    assert tables.item["kinds"].lengths.tolist() == [0, 1, 0] and tables.item["n"].present.tolist() == [
        False,
        True,
        False,
    ]
    with pytest.raises(
        ConfigError, match=r"'age' is declared as a feature, but there is no table for it \(--users FILE\)"
    ):
        prepare(pa.table({"item_id": [1, 2]}), user_features=["age:sparse"])


def test_user_table_features(tmp_path):
    write_lines(
        tmp_path / "e.csv", ["uid,item_id,timestamp", "1,x,1", "1,y,2", "1,z,3", "2,x,4", "2,y,5", "2,z,6", "3,x,1"]
    )
    write_lines(tmp_path / "users.csv", ["uid,country,age", "1,NZ,31", "2,,40", "3,FR,27", "9,US,50"])
    ds = prepare_dataset(
        "csv",
        tmp_path / "ds",
        raw=tmp_path / "e.csv",
        user_col="uid",
        users=str(tmp_path / "users.csv"),
        user_features=["country:sparse", "age:continuous"],
    )
    assert ds.users.column_names == ["user", "raw_id", "country", "age"]
    assert specs_of(ds, "user") == {"country": ("sparse", 2, round(2 / 3, 4)), "age": ("continuous", None, 1.0)}
    split = leave_one_out(ds.sequences)  # user 3 has one event: in training; users 1, 2 too (first event)
    tables = fit_features(ds, split.train)
    assert tables.user["country"].vocab == ["FR", "NZ"]  # a tie in frequency: sorted
    assert tables.user["country"].ids.tolist() == [MISSING, 3, MISSING, 2]
