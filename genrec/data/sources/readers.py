"""Readers for delimited text files: a fast pyarrow path, and exact line numbers when it fails.

pyarrow parses millions of rows per second but its errors do not say which line is wrong; when it
fails, the file is scanned again in Python to find the first bad line and report it by number.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from genrec.errors import DataError

_PYTHON_TYPES = {pa.int64(): int, pa.int32(): int, pa.float64(): float, pa.float32(): float}


def require_file(path: Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing {what}: {path}")
    return path


def read_table(
    path: Path,
    columns: dict[str, pa.DataType | None],
    delimiter: str,
    *,
    column_names: list[str] | None = None,
    encoding: str = "utf-8",
    quoted: bool = True,
) -> pa.Table:
    """Read the named `columns` (name -> type, None = let pyarrow infer) of a delimited file.

    With `column_names` the file has no header row and these name its fields in order; without
    it the first line is the header. A multi-character `delimiter` (MovieLens `::`) is supported.
    Raises `DataError` naming the file and the first malformed line.
    """
    path = require_file(path)
    header = column_names is None
    if len(delimiter) > 1:
        data = path.read_bytes().replace(delimiter.encode(encoding), b"\x1f")
        source: pa.NativeFile | Path = pa.BufferReader(data)
        single = "\x1f"
    else:
        source, single = path, delimiter
    read = pacsv.ReadOptions(column_names=column_names, encoding=encoding, block_size=1 << 24)
    parse = pacsv.ParseOptions(delimiter=single, quote_char='"' if quoted else False)
    types = {name: t for name, t in columns.items() if t is not None}
    convert = pacsv.ConvertOptions(column_types=types, include_columns=list(columns), strings_can_be_null=True)
    try:
        table = pacsv.read_csv(source, read_options=read, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowKeyError, UnicodeDecodeError) as exc:
        if header:
            present = read_header(path, delimiter, encoding, quoted)
            if not present:
                wanted = f" naming the columns {', '.join(map(repr, columns))}" if columns else ""
                raise DataError(f"{path}: the file is empty (expected a header line{wanted})") from None
            absent = [name for name in columns if name not in present]
            if absent:
                raise DataError(
                    f"{path}: no column {', '.join(map(repr, absent))}; the header has {', '.join(map(repr, present))}"
                ) from None
        names = column_names or read_header(path, delimiter, encoding, quoted)
        _raise_first_bad_line(path, names, types, delimiter, encoding, quoted, skip=1 if header else 0)
        raise DataError(f"{path}: cannot be parsed: {exc}") from exc
    if any(pa.types.is_binary(t) or pa.types.is_large_binary(t) for t in table.schema.types):
        # pyarrow reads a column holding bytes that are not valid text as binary: name the first such line
        for _ in iter_lines(path, encoding):
            pass
        raise DataError(f"{path}: a column holds bytes that are not {encoding} text")
    return table


def read_header(path: Path, delimiter: str, encoding: str = "utf-8", quoted: bool = True) -> list[str]:
    """The column names on the first line ([] for an empty file)."""
    first = next(iter_lines(path, encoding), (1, ""))[1]
    return _split(first, delimiter, quoted) if first.strip() else []


def _split(line: str, delimiter: str, quoted: bool) -> list[str]:
    if quoted and len(delimiter) == 1:
        return next(csv.reader(io.StringIO(line), delimiter=delimiter), [])
    return line.split(delimiter)


def _raise_first_bad_line(
    path: Path,
    names: list[str],
    types: dict[str, pa.DataType],
    delimiter: str,
    encoding: str,
    quoted: bool,
    skip: int,
) -> None:
    checks = [(names.index(n), n, _PYTHON_TYPES[t]) for n, t in types.items() if t in _PYTHON_TYPES and n in names]
    for lineno, line in iter_lines(path, encoding):
        if lineno <= skip or not line.strip():
            continue
        fields = _split(line, delimiter, quoted)
        if len(fields) != len(names):
            raise DataError(
                f"{path}, line {lineno}: expected {len(names)} fields separated by {delimiter!r}, "
                f"got {len(fields)}: {line[:200]!r}"
            )
        for index, name, cast in checks:
            try:
                cast(fields[index])
            except ValueError:
                raise DataError(
                    f"{path}, line {lineno}: field {name!r} should be {cast.__name__}, got {fields[index][:80]!r}"
                ) from None


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield `(line_number, line)` with 1-based numbers and the newline stripped.

    Bytes that are not valid `encoding` text raise a `DataError` naming the line they are on.
    """
    path = require_file(path)
    hint = " (pass the file's encoding, e.g. --encoding latin-1)" if codecs.lookup(encoding).name == "utf-8" else ""
    if "\n".encode(encoding) != b"\n":  # UTF-16/32: lines cannot be cut as bytes
        with open(path, encoding=encoding, newline="") as f:
            lineno = 0
            try:
                for lineno, line in enumerate(f, start=1):  # noqa: B007 - lineno is used in the error below
                    yield lineno, line.rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}, line {lineno + 1}: not valid {encoding} text ({exc.reason}){hint}") from None
        return
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}, line {lineno}: not valid {encoding} text ({exc.reason} at byte "
                    f"{exc.start + 1} of the line){hint}"
                ) from None
            yield lineno, line.rstrip("\r\n")


def split_lines(
    path: Path, delimiter: str, num_fields: int, encoding: str = "utf-8"
) -> Iterator[tuple[int, list[str]]]:
    """Yield `(line_number, fields)` of a small unquoted delimited file, checking the field count."""
    for lineno, line in iter_lines(path, encoding):
        if not line.strip():
            continue
        fields = line.split(delimiter)
        if len(fields) != num_fields:
            raise DataError(
                f"{path}, line {lineno}: expected {num_fields} fields separated by {delimiter!r}, "
                f"got {len(fields)}: {line[:200]!r}"
            )
        yield lineno, fields
