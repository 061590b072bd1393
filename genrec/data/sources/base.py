"""What every source returns: the raw tables, in raw-file order, with raw ids.

A source only turns raw files into these tables; filtering, re-indexing and sorting happen once,
for every source alike, in `genrec.data.prepare`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from genrec.data.features import FeatureSpec
from genrec.data.raw import Release, locate_release
from genrec.errors import DataError


@dataclass
class RawTables:
    """Raw tables of one dataset.

    interactions: columns `user`, `item` (raw ids, int or string), `timestamp` (int64 seconds),
        optional `rating` (float32), one row per event **in raw-file order** (ties in time are
        later broken by this order).
    items: optional item metadata: `item` (raw id) plus text / feature columns.
    users: optional user features: `user` (raw id) plus feature columns.
    files: the raw files read, for the manifest's checksums.
    text_fields: the item columns that hold text (in the order a prompt should show them).
    info: source-specific facts for the manifest (e.g. which published preprocessing it follows).
    has_timestamps: False when the release has none; `timestamp` then holds each event's position
        in its user's sequence (0, 1, 2, ...), which keeps the given order.
    catalogue: "interactions" (the items that occur in the events after filtering) or "metadata"
        (every item of `items`, for prepared datasets that come with their own catalogue).
    split_cases: a split that comes with the dataset: columns `split` ("train" / "valid" /
        "test"), `user` (raw id), `position` (int64, index of the target event in the user's
        sequence) and `history_length` (int64, how many events before it the case shows).
    item_features / user_features: the columns of `items` / `users` that are typed features
        (`genrec.data.features`); their statistics are filled in when the dataset is prepared.
    """

    interactions: pa.Table
    items: pa.Table | None = None
    users: pa.Table | None = None
    files: list[Path] = field(default_factory=list)
    text_fields: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    has_timestamps: bool = True
    catalogue: str = "interactions"
    split_cases: pa.Table | None = None
    item_features: list[FeatureSpec] = field(default_factory=list)
    user_features: list[FeatureSpec] = field(default_factory=list)


class Source(ABC):
    """A raw format. Subclasses set `name` and `release` (if it has an official download)."""

    name: ClassVar[str]
    release: ClassVar[Release | None] = None

    def locate(self, raw: str | Path | None, download: bool = True) -> Path:
        """The raw folder (or file) to read; see `genrec.data.raw` for the lookup order."""
        if self.release is None:
            if raw is None:
                raise DataError(f"source {self.name!r} needs --raw PATH (there is no official download)")
            path = Path(raw).expanduser()
            if not path.exists():
                raise DataError(f"--raw {path}: no such file or directory")
            return path
        return locate_release(self.release, raw, download)

    @abstractmethod
    def read(self, raw: Path) -> RawTables:
        """Read the raw files under `raw` into `RawTables`."""

    def options(self) -> dict[str, Any]:
        """The source's options, recorded in the manifest."""
        return {}

    def input_files(self) -> dict[str, Path]:
        """Files the options name besides `--raw` (name -> path), e.g. the csv source's item table."""
        return {}


class FolderSource(Source):
    """A source whose `--raw` folder may hold several datasets `<Name>.*`, chosen with `name`."""

    def __init__(self, name: str | None = None) -> None:
        self.dataset_name = name

    def options(self) -> dict[str, Any]:
        return {"name": self.dataset_name}

    def dataset_stem(self, raw: Path, suffixes: tuple[str, ...]) -> str:
        """`name`, or the only `<stem>` with a file `<stem><suffix>` in `raw` (first suffix that has any)."""
        if not raw.is_dir():
            raise DataError(f"--raw {raw}: expected a folder holding <Name>{suffixes[0]}")
        if self.dataset_name is not None:
            return self.dataset_name
        for suffix in suffixes:
            stems = sorted(p.name[: -len(suffix)] for p in raw.glob(f"*{suffix}"))
            if len(stems) == 1:
                return stems[0]
            if stems:
                raise DataError(f"{raw}: holds several datasets ({', '.join(stems)}); choose one with --name")
        raise DataError(f"{raw}: no <Name>{suffixes[0]} file found")


def to_epoch_seconds(column: pa.ChunkedArray, where: str) -> pa.ChunkedArray:
    """Timestamps as int64 seconds, from integers, floats, timestamps, dates or ISO-8601 strings."""
    t = column.type
    try:
        if pa.types.is_integer(t):
            return column.cast(pa.int64())
        if pa.types.is_floating(t):
            bad = pc.invert(pc.is_finite(column))
            if pc.any(bad).as_py():
                raise DataError(
                    f"{where}, row {pc.index(bad, True).as_py() + 1}: timestamp "
                    f"{column[pc.index(bad, True).as_py()].as_py()} is not a number"
                )
            return pc.floor(column).cast(pa.int64())
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            column = column.cast(pa.timestamp("s"))
            t = column.type
        if pa.types.is_date(t):
            column = column.cast(pa.timestamp("s"))
            t = column.type
        if pa.types.is_timestamp(t):
            return column.cast(pa.timestamp("s"), safe=False).cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{where}: cannot read timestamps (unix seconds or ISO-8601 expected): {exc}") from None
    raise DataError(f"{where}: timestamps of type {t} are not supported (unix seconds or ISO-8601 expected)")


def check_no_nulls(table: pa.Table, columns: list[str], where: str, first_line: int = 1) -> None:
    """Raise naming the column and the line of the first empty value, if any."""
    for name in columns:
        column = table.column(name)
        if column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            raise DataError(
                f"{where}, line {row + first_line}: no value in column {name!r} (empty, or a null "
                f"marker such as NA, NaN or null)"
            )
