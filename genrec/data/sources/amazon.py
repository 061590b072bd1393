"""Amazon reviews: the 2014 release (McAuley et al.) and the 2018 release (Ni et al.).

2014: `reviews_<Category>_5.json.gz` (JSON lines: reviewerID, asin, overall, unixReviewTime) and
`meta_<Category>.json.gz`, whose lines are Python dict literals (read with `ast.literal_eval`,
never `eval`). 2018: `<Category>_5.json.gz` (or the full `<Category>.json.gz`) and
`meta_<Category>.json.gz`, both strict JSON lines. Item text: `title`, `brand`, `categories`
(a list) and `description`, with HTML tags removed and entities decoded.

Typed features: `brand` (sparse), `categories` (array) and `price` (continuous, log-standard; 2014
gives a number, 2018 a text such as "$12.99" or "$5.99 - $9.99", read as its first amount).
"""

from __future__ import annotations

import ast
import gzip
import html
import json
import math
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson

from genrec.data.features import FeatureSpec
from genrec.data.sources.base import RawTables, Source, check_no_nulls
from genrec.data.sources.readers import read_table, require_file
from genrec.errors import DataError

REVIEW_SCHEMA = pa.schema(
    [("reviewerID", pa.string()), ("asin", pa.string()), ("overall", pa.float64()), ("unixReviewTime", pa.int64())]
)
_TAG = re.compile(r"<[^>]+>")
_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")
_PRICE = re.compile(r"^\s*\$?\s*(\d[\d,]*(?:\.\d+)?)")
ITEM_FEATURES = [
    FeatureSpec("brand", "sparse"),
    FeatureSpec("categories", "array"),
    FeatureSpec("price", "continuous", "log-standard"),
]


def clean_text(value: Any) -> str | None:
    """HTML tags removed, entities decoded, whitespace collapsed; lists joined by spaces."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    text = " ".join(html.unescape(_TAG.sub(" ", str(value))).split())
    return text or None


def parse_price(value: Any) -> float | None:
    """A price as a number: 2014's float, or 2018's text ("$12.99", "$1,299.00", "$5.99 - $9.99": the
    first amount); anything else (empty, HTML, NaN, negative) is missing."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        price = float(value)
    else:
        match = _PRICE.match(str(value or ""))
        if match is None:
            return None
        price = float(match.group(1).replace(",", ""))
    return price if math.isfinite(price) and price >= 0 else None


def flatten_categories(value: Any) -> list[str]:
    """2014 `categories` is a list of category paths (lists); 2018 `category` a flat list."""
    flat: list[str] = []
    for entry in value or []:
        for name in entry if isinstance(entry, (list, tuple)) else [entry]:
            name = clean_text(name)
            if name and name not in flat:
                flat.append(name)
    return flat


def gzip_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a gzip file; a truncated or corrupt file is an error naming the line."""
    lineno = 0
    try:
        with gzip.open(require_file(path), "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):  # noqa: B007 - used in the error below
                yield lineno, line
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt gzip file after line {lineno} ({exc})") from None


def read_reviews(path: Path) -> pa.Table:
    """Events (user, item, timestamp, rating) of a reviews file, in file order."""
    try:
        with pa.input_stream(str(require_file(path)), compression="gzip") as stream:
            parse = pajson.ParseOptions(explicit_schema=REVIEW_SCHEMA, unexpected_field_behavior="ignore")
            table = pajson.read_json(stream, parse_options=parse).select(REVIEW_SCHEMA.names)
    except (pa.ArrowInvalid, OSError, EOFError):
        table = _read_reviews_slowly(path)  # finds and names the bad line
    check_no_nulls(table, REVIEW_SCHEMA.names, str(path))
    return pa.table(
        {
            "user": table["reviewerID"],
            "item": table["asin"],
            "timestamp": table["unixReviewTime"],
            "rating": table["overall"].cast(pa.float32()),
        }
    )


def _read_reviews_slowly(path: Path) -> pa.Table:
    columns: dict[str, list] = {name: [] for name in REVIEW_SCHEMA.names}
    for lineno, line in gzip_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from None
        for name in REVIEW_SCHEMA.names:
            if record.get(name) is None:
                raise DataError(f"{path}, line {lineno}: missing field {name!r}")
            columns[name].append(record[name])
    try:
        return pa.table({n: pa.array(v, REVIEW_SCHEMA.field(n).type) for n, v in columns.items()})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"{path}: a field has the wrong type ({exc})") from None


def read_metadata(
    path: Path, wanted: set[str], parse: Callable[[str], Any], fields: dict[str, str]
) -> tuple[pa.Table, int]:
    """Item text of the `wanted` asins; returns (table, number of duplicate lines skipped).

    parse: turns one line into a dict (`ast.literal_eval` for 2014, `json.loads` for 2018).
    fields: output column -> field name in the record (title, brand, categories, description).
    """
    rows: dict[str, dict] = {}
    duplicates = 0
    for lineno, line in gzip_lines(path):
        match = _ASIN.search(line)
        if not line.strip() or (match and match.group(1) not in wanted):
            continue  # most lines describe items without reviews: skip them before parsing
        try:
            record = parse(line)
        except (ValueError, SyntaxError, json.JSONDecodeError):
            raise DataError(f"{path}, line {lineno}: not a valid metadata record") from None
        if not isinstance(record, dict) or "asin" not in record:
            raise DataError(f"{path}, line {lineno}: metadata record without an asin")
        asin = record["asin"]
        if asin not in wanted:
            continue
        if asin in rows:
            duplicates += 1
            continue
        rows[asin] = {
            "title": clean_text(record.get(fields["title"])),
            "brand": clean_text(record.get(fields["brand"])),
            "categories": flatten_categories(record.get(fields["categories"])),
            "description": clean_text(record.get(fields["description"])),
            "price": parse_price(record.get("price")),
        }
    table = pa.table(
        {
            "item": pa.array(list(rows), pa.string()),
            "title": pa.array([r["title"] for r in rows.values()], pa.string()),
            "brand": pa.array([r["brand"] for r in rows.values()], pa.string()),
            "categories": pa.array([r["categories"] for r in rows.values()], pa.list_(pa.string())),
            "description": pa.array([r["description"] for r in rows.values()], pa.string()),
            "price": pa.array([r["price"] for r in rows.values()], pa.float64()),
        }
    )
    return table, duplicates


class _Amazon(Source):
    """Shared reading of both releases; subclasses name the files and the metadata syntax."""

    def __init__(self, category: str | None = None) -> None:
        self.category = category

    def options(self) -> dict[str, Any]:
        return {"category": self.category}

    def _category(self, raw: Path, pattern: re.Pattern) -> str:
        if self.category is not None:
            return self.category
        found = sorted({m.group(1) for p in raw.iterdir() if (m := pattern.fullmatch(p.name))})
        if len(found) != 1:
            raise DataError(
                f"{raw}: found {len(found)} categories ({', '.join(found) or 'none'}); choose one with --category"
            )
        return found[0]

    def _read(
        self,
        raw: Path,
        reviews: Path,
        meta: Path,
        parse: Callable,
        fields: dict,
        info: dict,
        read_events: Callable[[Path], pa.Table] | None = None,
    ) -> RawTables:
        if not raw.is_dir():
            raise DataError(f"--raw {raw}: expected the folder holding the review and metadata files")
        events = (read_events or read_reviews)(reviews)
        files, items, duplicates = [reviews], None, 0
        if meta.is_file():
            items, duplicates = read_metadata(meta, set(events["item"].unique().to_pylist()), parse, fields)
            files.append(meta)
        return RawTables(
            interactions=events,
            items=items,
            files=files,
            text_fields=["title", "brand", "categories", "description"] if items is not None else [],
            item_features=ITEM_FEATURES if items is not None else [],
            info={**info, "category": reviews.name, "duplicate_metadata_lines_skipped": duplicates},
        )


class Amazon2014(_Amazon):
    """ratings_only: read the ratings-only `ratings_<Category>.csv` (no header: user, item, rating,
    time; every rating, not the 5-core), the file generative-recommenders' Amazon Books comes from."""

    name = "amazon2014"

    def __init__(self, category: str | None = None, ratings_only: bool = False) -> None:
        super().__init__(category)
        self.ratings_only = ratings_only

    def options(self) -> dict[str, Any]:
        return {"category": self.category, "ratings_only": self.ratings_only}

    def read(self, raw: Path) -> RawTables:
        fields = {"title": "title", "brand": "brand", "categories": "categories", "description": "description"}
        if self.ratings_only:
            category = self._category(raw, re.compile(r"ratings_(.+)\.csv"))
            return self._read(
                raw,
                raw / f"ratings_{category}.csv",
                raw / f"meta_{category}.json.gz",
                ast.literal_eval,
                fields,
                {
                    "follows": "Amazon 2014 ratings-only file as released (generative-recommenders' "
                    "'amzn-books': add user_core=5, item_core=5, core_once=true)"
                },
                read_events=read_ratings_csv,
            )
        category = self._category(raw, re.compile(r"reviews_(.+)_5\.json\.gz"))
        return self._read(
            raw,
            raw / f"reviews_{category}_5.json.gz",
            raw / f"meta_{category}.json.gz",
            ast.literal_eval,
            fields,
            {
                "follows": "Amazon 2014 5-core reviews as released (the SASRec / TIGER / LETTER 'Beauty', "
                "'Sports', 'Toys' and HLLM 'Books' source); add filters explicitly"
            },
        )


def read_ratings_csv(path: Path) -> pa.Table:
    """Events of a headerless `ratings_<Category>.csv` (user, item, rating, unix time), in file order."""
    table = read_table(
        require_file(path),
        {"user": pa.string(), "item": pa.string(), "rating": pa.float32(), "timestamp": pa.int64()},
        ",",
        column_names=["user", "item", "rating", "timestamp"],
    )
    check_no_nulls(table, table.column_names, str(path))
    return table.select(["user", "item", "timestamp", "rating"])


class Amazon2018(_Amazon):
    name = "amazon2018"

    def __init__(self, category: str | None = None, five_core: bool = True) -> None:
        super().__init__(category)
        self.five_core = five_core

    def options(self) -> dict[str, Any]:
        return {"category": self.category, "five_core": self.five_core}

    def read(self, raw: Path) -> RawTables:
        suffix = "_5.json.gz" if self.five_core else ".json.gz"
        category = self._category(raw, re.compile(r"(?!meta_)(.+?)" + re.escape(suffix)))
        fields = {"title": "title", "brand": "brand", "categories": "category", "description": "description"}
        return self._read(
            raw,
            raw / f"{category}{suffix}",
            raw / f"meta_{category}.json.gz",
            json.loads,
            fields,
            {
                "follows": f"Amazon 2018 {'5-core' if self.five_core else 'full'} reviews as released "
                "(MiniOneRec's source); add filters explicitly"
            },
        )
