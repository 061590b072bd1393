"""LETTER / TIGER-style prepared sequences: `<Name>.inter.json` and `<Name>.index.json`.

`<Name>.inter.json` is `{user_index: [item_index, ...]}` in time order (no timestamps), as made
by the P5 / TIGER / LETTER preprocessing of the Amazon 2014 5-core reviews; `<Name>.index.json`
gives each item's published semantic ID (`["<a_1>", "<b_2>", ...]`), kept as the items' `sid`
column. Leave-one-out runs on the given order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from genrec.data.sources.base import FolderSource, RawTables
from genrec.data.sources.readers import require_file
from genrec.errors import DataError


def load_json(path: Path) -> Any:
    try:
        return json.loads(require_file(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None


def int_key(key: str, path: Path, what: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise DataError(f"{path}: {what} {key!r} is not an integer index") from None


def sid_table(path: Path) -> pa.Table:
    """Items' published semantic IDs from `{item_index: ["<a_1>", ...]}`: columns item, sid."""
    index = load_json(path)
    if not isinstance(index, dict):
        raise DataError(f"{path}: expected an object mapping item index to a list of codes")
    items, sids = [], []
    for key, codes in index.items():
        if not (isinstance(codes, list) and all(isinstance(c, str) for c in codes)):
            raise DataError(f"{path}: semantic ID of item {key} is not a list of strings: {codes!r}")
        items.append(int_key(key, path, "item")), sids.append(codes)
    return pa.table({"item": pa.array(items, pa.int64()), "sid": pa.array(sids, pa.list_(pa.string()))})


class LetterSource(FolderSource):
    name = "letter"

    def read(self, raw: Path) -> RawTables:
        stem = self.dataset_stem(raw, (".inter.json",))
        inter_path = require_file(raw / f"{stem}.inter.json", "interaction sequences")
        sequences = load_json(inter_path)
        if not isinstance(sequences, dict):
            raise DataError(f"{inter_path}: expected an object mapping user index to a list of item indices")
        users, items, positions = [], [], []
        for key, seq in sequences.items():
            user = int_key(key, inter_path, "user")
            if not (isinstance(seq, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in seq)):
                raise DataError(f"{inter_path}: the sequence of user {key} is not a list of item indices")
            users.extend([user] * len(seq))
            items.extend(seq)
            positions.extend(range(len(seq)))
        events = pa.table(
            {
                "user": pa.array(users, pa.int64()),
                "item": pa.array(items, pa.int64()),
                "timestamp": pa.array(positions, pa.int64()),
            }
        )
        files, item_table = [inter_path], None
        index_path = raw / f"{stem}.index.json"
        if index_path.is_file():
            files.append(index_path)
            item_table = sid_table(index_path)
        return RawTables(
            interactions=events,
            items=item_table,
            files=files,
            has_timestamps=False,
            info={
                "follows": "P5 / TIGER / LETTER preprocessing of the Amazon 2014 5-core reviews (given as "
                "time-ordered sequences); genrec applies no filter",
                "dataset": stem,
            },
        )
