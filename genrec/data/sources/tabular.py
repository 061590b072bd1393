"""Any CSV or Parquet file of (user, item, timestamp[, rating]) events, with an optional item table.

`--raw` is the interactions file; the column mapping names its columns. The item table (CSV or
Parquet, by extension) has an id column and text columns (all other columns when none are named).
"""

from __future__ import annotations

import codecs
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from genrec.data.sources.base import RawTables, Source, check_no_nulls, to_epoch_seconds
from genrec.data.sources.readers import read_header, read_table, require_file
from genrec.errors import ConfigError, DataError


@dataclass
class TabularOptions:
    """Column mapping of the generic source.

    user_col / item_col / time_col / rating_col: columns of the interactions file (rating optional).
    delimiter: field separator of CSV files.
    encoding: text encoding of CSV files (Parquet strings are always UTF-8).
    items: optional item table; items_id_col defaults to item_col; text_cols defaults to every
        other column of the item table.
    """

    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str = "timestamp"
    rating_col: str | None = None
    delimiter: str = ","
    items: str | None = None
    items_id_col: str | None = None
    text_cols: list[str] | None = None
    encoding: str = "utf-8"

    def __post_init__(self) -> None:
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ConfigError(
                f"encoding: unknown text encoding {self.encoding!r} (e.g. utf-8, latin-1, cp1252)"
            ) from None


def _read_any(path: Path, columns: list[str] | None, delimiter: str, encoding: str) -> pa.Table:
    """Read `columns` (None = all) of a CSV or Parquet file, naming the file in every error."""
    path = require_file(path)
    if path.suffix == ".parquet":
        try:
            schema = pq.read_schema(path)
        except pa.ArrowInvalid as exc:
            raise DataError(f"{path}: not a readable Parquet file: {exc}") from None
        absent = [c for c in columns or [] if c not in schema.names]
        if absent:
            raise DataError(
                f"{path}: no column {', '.join(map(repr, absent))}; its columns are {', '.join(map(repr, schema.names))}"
            )
        try:
            return pq.read_table(path, columns=columns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file: {exc}") from None
    if columns is None:
        columns = read_header(path, delimiter, encoding)
    return read_table(path, {c: None for c in columns}, delimiter, encoding=encoding)


def check_id_type(column: pa.ChunkedArray, where: str) -> None:
    """Ids must be integers or text: anything else (lists, floats, binary) cannot key an item or a user."""
    t = column.type
    if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise DataError(f"{where} has type {t}; user and item ids must be integers or strings")


def check_unique(column: pa.ChunkedArray, where: str) -> None:
    """Raise naming the first id that appears twice."""
    counts = pc.value_counts(column)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        raise DataError(f"{where}: id {repeated[0]['values'].as_py()!r} appears {repeated[0]['counts'].as_py()} times")


class TabularSource(Source):
    name = "csv"

    def __init__(self, **options: Any) -> None:
        self.opts = TabularOptions(**options)

    def options(self) -> dict[str, Any]:
        return asdict(self.opts)

    def input_files(self) -> dict[str, Path]:
        return {} if self.opts.items is None else {"item table (--items)": Path(self.opts.items).expanduser()}

    def read(self, raw: Path) -> RawTables:
        o = self.opts
        if raw.is_dir():
            raise DataError(f"--raw {raw} is a directory; the {self.name} source needs the interactions file")
        wanted = [o.user_col, o.item_col, o.time_col] + ([o.rating_col] if o.rating_col else [])
        table = _read_any(raw, wanted, o.delimiter, o.encoding)
        first_line = 1 if raw.suffix == ".parquet" else 2
        where = str(raw)
        check_no_nulls(table, wanted, where if first_line == 2 else f"{where} (row numbers)", first_line)
        for col in (o.user_col, o.item_col):
            check_id_type(table[col], f"{raw}: column {col!r}")
        columns = {
            "user": table[o.user_col],
            "item": table[o.item_col],
            "timestamp": to_epoch_seconds(table[o.time_col], f"{raw}: column {o.time_col!r}"),
        }
        if o.rating_col:
            try:
                columns["rating"] = table[o.rating_col].cast(pa.float32())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise DataError(f"{raw}: column {o.rating_col!r} is not numeric") from None
        files, items, text_fields = [raw], None, []
        if o.items:
            items_path = Path(o.items).expanduser()
            id_col = o.items_id_col or o.item_col
            items = _read_any(items_path, None, o.delimiter, o.encoding)
            if id_col not in items.column_names:
                raise DataError(
                    f"{items_path}: no item id column {id_col!r}; its columns are "
                    f"{', '.join(map(repr, items.column_names))} (set items_id_col)"
                )
            text_fields = o.text_cols if o.text_cols is not None else [c for c in items.column_names if c != id_col]
            absent = [c for c in text_fields if c not in items.column_names]
            if absent:
                raise DataError(f"{items_path}: no text column {', '.join(map(repr, absent))}")
            check_no_nulls(items, [id_col], str(items_path), first_line=2)
            check_id_type(items[id_col], f"{items_path}: column {id_col!r}")
            check_unique(items[id_col], f"{items_path}: column {id_col!r}")
            items = items.select([id_col, *text_fields]).rename_columns(["item", *text_fields])
            item_type = columns["item"].type
            if items["item"].type != item_type:
                try:
                    items = items.set_column(0, "item", items["item"].cast(item_type))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise DataError(
                        f"{items_path}: item ids of type {items['item'].type} do not match the interactions' {item_type}"
                    ) from None
            files.append(items_path)
        return RawTables(interactions=pa.table(columns), items=items, files=files, text_fields=text_fields)


class ParquetSource(TabularSource):
    name = "parquet"
