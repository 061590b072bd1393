"""MiniOneRec prepared data (Amazon 2018 categories, as prepared for semantic-ID LLM recommenders).

Files of a dataset `<Name>` (e.g. `Office_Products`): `<Name>.item.json` (`{item_index: {title,
description, ...}}`, the catalogue), `<Name>.index.json` (published semantic IDs, kept as the
items' `sid` column), and any of `<Name>.train/.valid/.test.csv` with columns `user_id,
history_item_title, item_title, history_item_id, item_id, history_item_sid, item_sid`, one row
per sliding window (the history is the previous <= 10 items, a Python-list string). The split is
MiniOneRec's global 8:1:1 time split of those windows and is kept as given.

Typed features, where `item.json` has them: `brand` (sparse) and `categories` (array: a list, a
Python-list string, or one category); an empty value is missing.
"""

from __future__ import annotations

import ast
import csv
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from genrec.data.features import FeatureSpec
from genrec.data.sources.base import FolderSource, RawTables
from genrec.data.sources.letter import int_key, load_json, sid_table
from genrec.data.sources.windows import Window, chain_windows
from genrec.errors import DataError

CSV_COLUMNS = ("user_id", "history_item_id", "item_id")
ITEM_FEATURES = {"brand": FeatureSpec("brand", "sparse"), "categories": FeatureSpec("categories", "array")}


def _text(value: object) -> str | None:
    """A field value as text; None and empty (or blank) values are missing."""
    return None if value is None or not str(value).strip() else str(value)


def _category_list(value: object) -> list[str] | None:
    """`categories` as a list: a JSON list, a Python-list string, or one category (None if empty)."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            pass
    values = value if isinstance(value, list) else [value]
    names = [str(v).strip() for v in values if v is not None and str(v).strip()]
    return names or None


def _item_table(path: Path) -> tuple[pa.Table, list[str]]:
    catalogue = load_json(path)
    if not isinstance(catalogue, dict) or not all(isinstance(v, dict) for v in catalogue.values()):
        raise DataError(f"{path}: expected an object mapping item index to an object of text fields")
    fields: list[str] = []
    for record in catalogue.values():
        fields += [k for k in record if k not in fields]
    columns: dict[str, list] = {"item": [int_key(k, path, "item") for k in catalogue]}
    for name in fields:
        parse = _category_list if name == "categories" else _text
        columns[name] = [parse(record.get(name)) for record in catalogue.values()]
    types = {name: pa.list_(pa.string()) if name == "categories" else pa.string() for name in fields}
    table = pa.table({"item": pa.array(columns.pop("item"), pa.int64())})
    for name in fields:
        table = table.append_column(name, pa.array(columns[name], types[name]))
    return table, fields


def _windows(path: Path, split: str, known: set[int]) -> Iterator[Window]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}, line 1: no column {', '.join(missing)} (header: {reader.fieldnames})")
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            try:
                history = ast.literal_eval(row["history_item_id"])
            except (ValueError, SyntaxError):
                history = None
            if not (isinstance(history, list) and all(isinstance(i, int) for i in history)):
                raise DataError(f"{where}: history_item_id is not a list of item ids: {row['history_item_id'][:80]!r}")
            try:
                target = int(row["item_id"])
            except (TypeError, ValueError):
                raise DataError(f"{where}: item_id is not an integer: {row['item_id']!r}") from None
            for item in (*history, target):
                if item not in known:
                    raise DataError(f"{where}: item_id {item} is not in {path.name.split('.')[0]}.item.json")
            yield Window(row["user_id"], history, target, split, where)


class MiniOneRecSource(FolderSource):
    name = "minionerec"

    def read(self, raw: Path) -> RawTables:
        stem = self.dataset_stem(raw, (".item.json",))
        item_path = raw / f"{stem}.item.json"
        items, fields = _item_table(item_path)
        files = [item_path]
        index_path = raw / f"{stem}.index.json"
        if index_path.is_file():
            sids = sid_table(index_path)
            rows = pc.index_in(items["item"], value_set=sids["item"])
            items = items.append_column("sid", sids["sid"].take(rows))
            files.append(index_path)
        csvs = [(s, raw / f"{stem}.{s}.csv") for s in ("train", "valid", "test") if (raw / f"{stem}.{s}.csv").is_file()]
        if not csvs:
            raise DataError(f"{raw}: none of {stem}.train.csv, {stem}.valid.csv, {stem}.test.csv exists")
        known = set(items["item"].to_pylist())
        windows = (w for split, path in csvs for w in _windows(path, split, known))
        events, cases = chain_windows(windows)
        files += [path for _, path in csvs]
        return RawTables(
            interactions=events,
            items=items,
            files=files,
            text_fields=fields,
            has_timestamps=False,
            catalogue="metadata",
            split_cases=cases,
            item_features=[ITEM_FEATURES[name] for name in fields if name in ITEM_FEATURES],
            info={
                "follows": "MiniOneRec: Amazon 2018, global 8:1:1 time split of sliding windows of <= 10 items; "
                "kept as given",
                "dataset": stem,
                "splits_present": [s for s, _ in csvs],
            },
        )
