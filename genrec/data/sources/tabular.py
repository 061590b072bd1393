"""Any CSV or Parquet file of (user, item, timestamp[, rating]) events, with an optional item table.

`--raw` is the interactions file; the column mapping names its columns. The item table (CSV or
Parquet, by extension) has an id column, text columns (all other columns that are not features,
when none are named) and feature columns (`item_features`, e.g. `genres:array`); the user table
has an id column and the `user_features`. In a CSV file an array feature's values share one cell,
separated by `|`.
"""

from __future__ import annotations

import codecs
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from genrec.data.features import (
    FeatureSpec,
    check_feature_column,
    check_unique_names,
    parse_feature_option,
    split_array_cells,
)
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
        other column of the item table that is not a feature.
    item_features: typed feature columns of the item table, `COLUMN:TYPE[:NORMALISATION]`.
    users: optional user table; users_id_col defaults to user_col; user_features as item_features.
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
    item_features: list[str] | None = None
    users: str | None = None
    users_id_col: str | None = None
    user_features: list[str] | None = None

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
        files = {"item table (--items)": self.opts.items, "user table (--users)": self.opts.users}
        return {name: Path(path).expanduser() for name, path in files.items() if path is not None}

    def feature_specs(self) -> tuple[list[FeatureSpec], list[FeatureSpec]]:
        """The declared item and user features; a feature named twice, or one without its table, is an error."""
        o = self.opts
        item = [parse_feature_option(t, "--item-feature") for t in o.item_features or []]
        user = [parse_feature_option(t, "--user-feature") for t in o.user_features or []]
        check_unique_names(item, "--item-feature")
        check_unique_names(user, "--user-feature")
        for specs, table, flag in ((item, o.items, "--items"), (user, o.users, "--users")):
            if specs and table is None:
                raise ConfigError(
                    f"{specs[0].name!r} is declared as a feature, but there is no table for it ({flag} FILE)"
                )
        return item, user

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
        item_specs, user_specs = self.feature_specs()
        files, items, users, text_fields = [raw], None, None, []
        if o.items:
            items_path = Path(o.items).expanduser()
            items = self._side_table(items_path, o.items_id_col or o.item_col, "item", item_specs, columns["item"].type)
            feature_names = [s.name for s in item_specs]
            others = [c for c in items.column_names if c != "item"]
            text_fields = o.text_cols if o.text_cols is not None else [c for c in others if c not in feature_names]
            absent = [c for c in text_fields if c not in items.column_names]
            if absent:
                raise DataError(f"{items_path}: no text column {', '.join(map(repr, absent))}")
            keep = [*text_fields, *(n for n in feature_names if n not in text_fields)]
            items = items.select(["item", *keep])
            files.append(items_path)
        if o.users:
            users_path = Path(o.users).expanduser()
            users = self._side_table(users_path, o.users_id_col or o.user_col, "user", user_specs, columns["user"].type)
            users = users.select(["user", *(s.name for s in user_specs)])
            files.append(users_path)
        return RawTables(
            interactions=pa.table(columns),
            items=items,
            users=users,
            files=files,
            text_fields=text_fields,
            item_features=item_specs,
            user_features=user_specs,
        )

    def _side_table(
        self, path: Path, id_col: str, key: str, specs: list[FeatureSpec], id_type: pa.DataType
    ) -> pa.Table:
        """An item or user table: ids checked and renamed to `key` (cast to the interactions' id type),
        feature columns checked against their declared types (arrays split from `a|b` text cells)."""
        table = _read_any(path, None, self.opts.delimiter, self.opts.encoding)
        if id_col not in table.column_names:
            raise DataError(
                f"{path}: no {key} id column {id_col!r}; its columns are "
                f"{', '.join(map(repr, table.column_names))} (set {key}s_id_col)"
            )
        check_no_nulls(table, [id_col], str(path), first_line=2)
        check_id_type(table[id_col], f"{path}: column {id_col!r}")
        check_unique(table[id_col], f"{path}: column {id_col!r}")
        first_line = 1 if path.suffix == ".parquet" else 2
        label = (lambda row: f"row {row + 1}") if first_line == 1 else (lambda row: f"line {row + 2}")
        for spec in specs:
            if spec.name not in table.column_names:
                raise DataError(
                    f"{path}: no column {spec.name!r} for the {key} feature; its columns are "
                    f"{', '.join(map(repr, table.column_names))}"
                )
            if spec.type == "array":
                table = table.set_column(
                    table.column_names.index(spec.name), spec.name, split_array_cells(table[spec.name])
                )
            check_feature_column(table[spec.name], spec, str(path), label)
        table = table.rename_columns([key if c == id_col else c for c in table.column_names])
        if table[key].type != id_type:
            try:
                table = table.set_column(table.column_names.index(key), key, table[key].cast(id_type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise DataError(
                    f"{path}: {key} ids of type {table[key].type} do not match the interactions' {id_type}"
                ) from None
        return table


class ParquetSource(TabularSource):
    name = "parquet"
