"""The generic CSV / Parquet source."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genrec.data import prepare_dataset
from genrec.errors import DataError

from conftest import write_lines


def test_csv_with_string_ids_iso_times_and_item_table(tmp_path):
    write_lines(
        tmp_path / "events.tsv",
        [
            "who\twhat\twhen\tstars",
            "bob\tB-2\t2024-01-02T00:00:00\t4",
            "amy\tB-1\t2024-01-01T10:00:00\t5",
            "bob\tB-1\t2024-01-01T00:00:00\t2",
        ],
    )
    write_lines(
        tmp_path / "items.tsv",
        [
            "sku\ttitle\tbrand\tprice",
            "B-1\tRed pen\tAcme\t1.5",
            'B-2\t"Blue ink, 2 pack"\tÜber\t3',
            "B-9\tUnused\tAcme\t9",
        ],
    )
    ds = prepare_dataset(
        "csv",
        tmp_path / "ds",
        raw=tmp_path / "events.tsv",
        user_col="who",
        item_col="what",
        time_col="when",
        rating_col="stars",
        delimiter="\t",
        items=str(tmp_path / "items.tsv"),
        items_id_col="sku",
        text_cols=["title", "brand"],
    )
    assert ds.user_raw_ids() == [None, "amy", "bob"] and ds.item_raw_ids() == [None, "B-1", "B-2"]
    assert ds.items.column_names == ["item", "raw_id", "title", "brand"]
    assert ds.items["brand"].to_pylist() == ["Acme", "Über"]
    assert ds.items["title"].to_pylist() == ["Red pen", "Blue ink, 2 pack"]
    assert ds.sequences.user(2).tolist() == [1, 2]  # bob, in time order
    assert ds.sequences.timestamps[1] == 1704067200  # 2024-01-01T00:00:00Z
    assert ds.manifest["catalogue"]["dropped_metadata_only_items"] == 1
    assert ds.manifest["source_options"]["user_col"] == "who"


def test_parquet_with_timestamp_type_and_missing_metadata(tmp_path):
    events = pa.table(
        {"user_id": [3, 3, 1], "item_id": [7, 8, 7], "timestamp": pa.array([2_000, 1_000, 1_500], pa.timestamp("ms"))}
    )
    pq.write_table(events, tmp_path / "e.parquet")
    pq.write_table(pa.table({"item_id": [7], "title": ["seven"]}), tmp_path / "items.parquet")
    ds = prepare_dataset("parquet", tmp_path / "ds", raw=tmp_path / "e.parquet", items=str(tmp_path / "items.parquet"))
    assert ds.items.to_pylist() == [{"item": 1, "raw_id": 7, "title": "seven"}, {"item": 2, "raw_id": 8, "title": None}]
    assert ds.manifest["catalogue"]["items_without_metadata"] == 1
    assert ds.sequences.user(2).tolist() == [2, 1] and ds.sequences.timestamps.tolist() == [1, 1, 2]
    with pytest.raises(DataError, match=r"no column 'when'; its columns are 'user_id', 'item_id', 'timestamp'"):
        prepare_dataset("parquet", tmp_path / "ds2", raw=tmp_path / "e.parquet", time_col="when")


def test_bad_generic_input(tmp_path):
    write_lines(tmp_path / "e.csv", ["user_id,item_id,timestamp", "1,1,100", "2,1,", "3,1,300"])
    with pytest.raises(DataError, match=r"e\.csv, line 3: no value in column 'timestamp'"):
        prepare_dataset("csv", tmp_path / "ds", raw=tmp_path / "e.csv")
    write_lines(tmp_path / "e.csv", ["user_id,item_id,timestamp", "1,1,100", "2,1,yesterday"])
    with pytest.raises(DataError, match="timestamp.*cannot read timestamps"):
        prepare_dataset("csv", tmp_path / "ds", raw=tmp_path / "e.csv")
    write_lines(tmp_path / "e.csv", ["user_id,item_id,timestamp", "1,1,100"])
    write_lines(tmp_path / "i.csv", ["item_id,title", "1,a", "1,b"])
    with pytest.raises(DataError, match=r"i\.csv: column .item_id.: id 1 appears 2 times"):
        prepare_dataset("csv", tmp_path / "ds", raw=tmp_path / "e.csv", items=str(tmp_path / "i.csv"))
    with pytest.raises(DataError, match="no item id column 'id'"):
        prepare_dataset(
            "csv", tmp_path / "ds", raw=tmp_path / "e.csv", items=str(tmp_path / "i.csv"), items_id_col="id"
        )
    assert not (tmp_path / "ds").exists()
