"""Amazon 2014 / 2018 readers and the HLLM CSV layout, on small files written here."""

import gzip
import json

import pytest

from genrec.data import leave_one_out, prepare_dataset
from genrec.errors import DataError

from conftest import write_lines


def write_gz(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    return path


REVIEWS = [
    {"reviewerID": "U1", "asin": "A1", "overall": 5.0, "unixReviewTime": 100, "reviewText": "great", "helpful": [1, 2]},
    {"reviewerID": "U1", "asin": "A2", "overall": 4.0, "unixReviewTime": 100},
    {"reviewerID": "U2", "asin": "A2", "overall": 3.0, "unixReviewTime": 50},
    {"reviewerID": "U1", "asin": "A3", "overall": 1.0, "unixReviewTime": 90},
]


def test_amazon2014_python_literal_metadata(tmp_path):
    raw = tmp_path / "amazon"
    write_gz(raw / "reviews_Beauty_5.json.gz", [json.dumps(r) for r in REVIEWS])
    write_gz(
        raw / "meta_Beauty.json.gz",
        [
            "{'asin': 'A1', 'title': 'Crème brûlée lip balm', 'brand': 'Acme', 'categories': [['Beauty', 'Skin Care'], ['Beauty', 'Lips']], 'description': 'Soft &amp; <b>smooth</b> &#8211; 10&quot;'}",
            "{'asin': 'A2', 'categories': [['Beauty']], 'description': \"It's nice\", 'price': 3.5, 'related': {'also_bought': ['A1']}}",
            "{'asin': 'Z9', 'title': 'never reviewed'}",
            "{'asin': 'A3', 'title': 'Third', 'salesRank': {'Beauty': 12}}",
        ],
    )
    ds = prepare_dataset("amazon2014", tmp_path / "ds", raw=raw)
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (2, 3, 4)
    items = {row["raw_id"]: row for row in ds.items.to_pylist()}
    assert items["A1"]["title"] == "Crème brûlée lip balm"
    assert items["A1"]["categories"] == ["Beauty", "Skin Care", "Lips"]
    assert items["A1"]["description"] == 'Soft & smooth – 10"'
    assert items["A2"]["title"] is None and items["A2"]["description"] == "It's nice"
    assert ds.manifest["text_fields"] == ["title", "brand", "categories", "description"]
    # U1: A3 (t=90), then A1 and A2 tied at t=100 in file order
    assert [ds.item_raw_ids()[i] for i in ds.sequences.user(1)] == ["A3", "A1", "A2"]
    assert leave_one_out(ds.sequences).test.targets.tolist() == [2]
    assert ds.interactions["rating"].to_pylist() == [1.0, 5.0, 4.0, 3.0]


def test_amazon2014_ratings_only_csv_as_generative_recommenders_reads_it(tmp_path):
    from genrec.data import Filters

    raw = tmp_path / "amazon"
    lines = [f"U{u},B{i},{1 + (u + i) % 5}.0,{1000 + 10 * i + u}" for u in range(8) for i in range(6) if (u + i) % 3]
    lines += ["U1,B9,5.0,999", "U99,B0,4.0,5"]  # an item and a user with one rating each
    write_lines(raw / "ratings_Books.csv", lines)
    ds = prepare_dataset(
        "amazon2014",
        tmp_path / "ds",
        raw=raw,
        ratings_only=True,
        filters=Filters(user_core=2, item_core=2, core_once=True),
    )
    assert "B9" not in ds.item_raw_ids() and "U99" not in ds.user_raw_ids()
    assert ds.num_interactions == len(lines) - 2 and ds.manifest["source_options"]["ratings_only"] is True
    assert ds.items.column_names == ["item", "raw_id"]  # no metadata file: ids only
    write_lines(raw / "ratings_Books.csv", ["U1,B1,5.0,100", "U1,B2,five,200"])
    with pytest.raises(DataError, match="ratings_Books.csv"):
        prepare_dataset("amazon2014", tmp_path / "bad", raw=raw, ratings_only=True)


def test_amazon2018_json_metadata_with_duplicates(tmp_path):
    raw = tmp_path / "amazon"
    write_gz(raw / "Office_Products_5.json.gz", [json.dumps(r) for r in REVIEWS])
    meta = [
        {
            "asin": "A1",
            "title": "Pen &amp; ink",
            "description": ["Line one.", "<p>Line two</p>"],
            "category": ["Office", "Pens"],
            "brand": "Zebra",
            "price": "$1,299.50",
        },
        {"asin": "A1", "title": "duplicate line"},
        {"asin": "A2", "title": "Paper", "price": "$5.99 - $9.99"},
        {"asin": "A3", "title": "Clip", "price": ".a-box-inner{background-color:#fff}"},
    ]
    write_gz(raw / "meta_Office_Products.json.gz", [json.dumps(m) for m in meta])
    ds = prepare_dataset("amazon2018", tmp_path / "ds", raw=raw)
    items = {row["raw_id"]: row for row in ds.items.to_pylist()}
    assert items["A1"] == {
        "item": 1,
        "raw_id": "A1",
        "title": "Pen & ink",
        "brand": "Zebra",
        "categories": ["Office", "Pens"],
        "description": "Line one. Line two",
        "price": 1299.5,
    }
    assert items["A2"]["price"] == 5.99 and items["A3"]["price"] is None  # a range: its first amount; HTML: missing
    assert [(s.name, s.type, s.vocab_size, s.coverage) for s in ds.features["item"]] == [
        ("brand", "sparse", 1, 0.3333),
        ("categories", "array", 2, 0.3333),
        ("price", "continuous", None, 0.6667),
    ]
    assert ds.manifest["preprocessing"]["duplicate_metadata_lines_skipped"] == 1
    assert ds.manifest["source_options"] == {"category": None, "five_core": True}


def test_amazon_bad_input(tmp_path):
    raw = tmp_path / "amazon"
    path = write_gz(raw / "reviews_Toys_5.json.gz", [json.dumps(r) for r in REVIEWS * 2000])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a download cut short
    with pytest.raises(DataError, match=r"reviews_Toys_5\.json\.gz: truncated or corrupt gzip file after line \d+"):
        prepare_dataset("amazon2014", tmp_path / "ds", raw=raw)
    write_gz(path, [json.dumps(REVIEWS[0]), "{not json", json.dumps(REVIEWS[1])])
    with pytest.raises(DataError, match=r"reviews_Toys_5\.json\.gz, line 2: not valid JSON"):
        prepare_dataset("amazon2014", tmp_path / "ds", raw=raw)
    write_gz(path, [json.dumps(REVIEWS[0]), json.dumps({"reviewerID": "U3", "asin": "A1", "overall": 2.0})])
    with pytest.raises(DataError, match=r"line 2: (no value in column|missing field) 'unixReviewTime'"):
        prepare_dataset("amazon2014", tmp_path / "ds", raw=raw)
    write_gz(path, [json.dumps(r) for r in REVIEWS])
    write_gz(raw / "meta_Toys.json.gz", ["{'asin': 'A1', 'title': 'ok'}", "{'asin': 'A2', 'title': __import__('os')}"])
    with pytest.raises(DataError, match=r"meta_Toys\.json\.gz, line 2: not a valid metadata record"):
        prepare_dataset("amazon2014", tmp_path / "ds", raw=raw)
    write_gz(raw / "reviews_Baby_5.json.gz", [json.dumps(REVIEWS[0])])
    with pytest.raises(DataError, match="found 2 categories .*--category"):
        prepare_dataset("amazon2014", tmp_path / "ds", raw=raw)
    assert not (tmp_path / "ds").exists()


def test_hllm_folder_layout_with_item_id_first(tmp_path):
    raw = tmp_path / "hllm"
    write_lines(
        raw / "dataset" / "Pixel200K.csv",
        ["item_id,user_id,timestamp", "i2,u1,20", "i1,u1,10", "i3,u1,20", "i1,u2,5", "i2,u2,6", "i3,u2,7"],
    )
    write_lines(
        raw / "information" / "Pixel200K.csv",
        ["item_id,title,tag,description", 'i1,Cat video,pets,"A cat, jumping"', "i2,Dog,pets,", "i3,Song,music,lyrics"],
    )
    ds = prepare_dataset("hllm-csv", tmp_path / "ds", raw=raw)
    assert ds.manifest["text_fields"] == ["title", "tag", "description"]
    assert [ds.item_raw_ids()[i] for i in ds.sequences.user(1)] == ["i1", "i2", "i3"]  # ties: file order
    items = {row["raw_id"]: row for row in ds.items.to_pylist()}
    assert items["i1"]["description"] == "A cat, jumping" and items["i2"]["description"] is None
    assert ds.manifest["preprocessing"]["dataset"] == "Pixel200K"
    assert [s.to_dict() for s in ds.features["item"]] == [
        {"name": "tag", "type": "sparse", "vocab_size": 2, "coverage": 1.0}  # PixelRec's tag
    ]
