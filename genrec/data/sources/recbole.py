"""RecBole / UniSRec atomic files: tab-separated, with typed headers such as `user_id:token`.

A folder holds one dataset `<Name>`: `.train/.valid/.test.inter` (`user_id:token`,
`item_id_list:token_seq`, `item_id:token`: one row per prediction, history then target), or a
plain `.inter` (`user_id:token`, `item_id:token`[, `rating:float`], `timestamp:float`); `.text`
(`item_id:token`, `text:token_seq`); `.item2index` / `.user2index` (raw id <TAB> index). When the
split files are present, sequences are rebuilt from them and their validation and test rows are
kept as the dataset's own split (UniSRec's leave-one-out); ids are mapped back to raw ids (ASINs).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from genrec.data.sources.base import FolderSource, RawTables
from genrec.data.sources.readers import iter_lines, split_lines
from genrec.data.sources.windows import Window, chain_windows
from genrec.errors import DataError

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


def read_atomic(path: Path, expected: dict[str, str], optional: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (line number, {column: value}) of an atomic file, checking its typed header.

    expected: column -> atomic type ("token", "token_seq", "float", "float_seq") that must be
    present (those in `optional` may be absent). Values are converted: float -> float,
    *_seq -> list split on spaces. Errors name the file, the line and the column.
    """
    lines = iter_lines(path)
    try:
        _, header = next(lines)
    except StopIteration:
        raise DataError(f"{path}: empty file (expected a typed header such as user_id:token)") from None
    columns: list[tuple[str, str]] = []
    for field in header.split("\t"):
        name, sep, kind = field.partition(":")
        if not sep or kind not in ATOMIC_TYPES:
            raise DataError(
                f"{path}, line 1: header field {field!r} is not NAME:TYPE with TYPE in {', '.join(ATOMIC_TYPES)}"
            )
        columns.append((name, kind))
    types = dict(columns)
    for name, kind in expected.items():
        if name not in types:
            if name in optional:
                continue
            raise DataError(f"{path}, line 1: no column {name}:{kind} in the header ({header!r})")
        if types[name] != kind:
            raise DataError(f"{path}, line 1: column {name!r} has type {types[name]}, expected {kind}")
    for lineno, line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise DataError(f"{path}, line {lineno}: expected {len(columns)} tab-separated fields, got {len(fields)}")
        row = {}
        for (name, kind), text in zip(columns, fields):
            if name not in expected:
                continue
            try:
                if kind == "float":
                    row[name] = float(text)
                elif kind == "float_seq":
                    row[name] = [float(x) for x in text.split()]
                else:
                    row[name] = text.split() if kind == "token_seq" else text
            except ValueError:
                raise DataError(f"{path}, line {lineno}: column {name!r} should be {kind}, got {text[:80]!r}") from None
        yield lineno, row


def _index_map(path: Path) -> dict[str, str]:
    """index -> raw id, from a `.item2index` / `.user2index` file (raw id <TAB> index)."""
    return {index: raw for _, (raw, index) in split_lines(path, "\t", 2)}


class _RawIds:
    """Maps the indices used in the atomic files back to raw ids, when a `.<kind>2index` file exists."""

    def __init__(self, base: Path, kind: str) -> None:
        self.path = Path(f"{base}.{kind}2index")
        self.kind = kind
        self.names = _index_map(self.path) if self.path.is_file() else None

    def __call__(self, token: str, where: str) -> str:
        if self.names is None:
            return token
        if token not in self.names:
            raise DataError(f"{where}: {self.kind} index {token!r} is not in {self.path.name}")
        return self.names[token]


class RecBoleSource(FolderSource):
    name = "recbole"

    def read(self, raw: Path) -> RawTables:
        stem = self.dataset_stem(raw, (".test.inter", ".inter"))
        base = raw / stem
        item_id, user_id = _RawIds(base, "item"), _RawIds(base, "user")
        files = [ids.path for ids in (item_id, user_id) if ids.names is not None]

        split_paths = [Path(f"{base}.{s}.inter") for s in ("train", "valid", "test")]
        split_cases = None
        if all(p.is_file() for p in split_paths):
            per_user: dict[str, dict[str, list[Window]]] = {}
            spec = {"user_id": "token", "item_id_list": "token_seq", "item_id": "token"}
            for split, path in zip(("train", "valid", "test"), split_paths):
                files.append(path)
                for lineno, row in read_atomic(path, spec):
                    where = f"{path}, line {lineno}"
                    user = user_id(row["user_id"], where)
                    history = [item_id(t, where) for t in row["item_id_list"]]
                    window = Window(user, history, item_id(row["item_id"], where), split, where)
                    per_user.setdefault(user, {"train": [], "valid": [], "test": []})[split].append(window)
            # RecBole writes a user's training rows longest first: put them back in time order
            ordered = (
                w
                for rows in per_user.values()
                for split in ("train", "valid", "test")
                for w in sorted(rows[split], key=lambda w: len(w.history))
            )
            events, split_cases = chain_windows(ordered)
            has_timestamps = False
        elif Path(f"{base}.inter").is_file():
            path = Path(f"{base}.inter")
            files.append(path)
            spec = {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}
            rows = [(n, r) for n, r in read_atomic(path, spec, optional=("rating",))]
            events = pa.table(
                {
                    "user": [user_id(r["user_id"], f"{path}, line {n}") for n, r in rows],
                    "item": [item_id(r["item_id"], f"{path}, line {n}") for n, r in rows],
                    "timestamp": pa.array([int(r["timestamp"]) for _, r in rows], pa.int64()),
                }
            )
            if rows and "rating" in rows[0][1]:
                events = events.append_column("rating", pa.array([r["rating"] for _, r in rows], pa.float32()))
            has_timestamps = True
        else:
            raise DataError(f"{raw}: found neither {stem}.train/.valid/.test.inter nor {stem}.inter")

        items = None
        text_path = Path(f"{base}.text")
        if text_path.is_file():
            files.append(text_path)
            rows = list(read_atomic(text_path, {"item_id": "token", "text": "token_seq"}))
            items = pa.table({"item": [r["item_id"] for _, r in rows], "text": [" ".join(r["text"]) for _, r in rows]})
        return RawTables(
            interactions=events,
            items=items,
            files=files,
            text_fields=["text"] if items is not None else [],
            has_timestamps=has_timestamps,
            split_cases=split_cases,
            info={
                "follows": "RecBole / UniSRec atomic files as given (UniSRec: 5-core Amazon 2018, leave-one-out, "
                "histories of at most 50 items); genrec applies no filter",
                "dataset": stem,
            },
        )
