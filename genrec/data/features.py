"""Typed side features: their declaration in the manifest and the checks of the columns that hold them.

A feature is one column of `items.parquet` or `users.parquet` (embeddings: of `item_vectors.parquet`),
declared in the manifest under `features.item` / `features.user` with its type:

    sparse      one categorical value per row (string, integer or boolean), e.g. a brand
    array       a list of categorical values (list of strings or integers), e.g. genres
    continuous  a number, mapped by `normalisation` (standard: z-score; log-standard: log1p, then
                z-score; none: as is) with statistics fitted on the training rows
    embedding   a fixed-size float vector (`dim`), e.g. an LLM or image embedding of the item

A missing value (null, an empty list) is allowed for every type; NaN and infinity are not. The
statistics in the manifest (`vocab_size`: distinct values, `coverage`: share of rows with a value)
describe the whole table; the vocabularies a model uses are fitted on the training part of a split
(`genrec.data.feature_tables`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genrec.errors import ConfigError, DataError

FeatureType = Literal["sparse", "array", "continuous", "embedding"]
Normalisation = Literal["standard", "log-standard", "none"]
FEATURE_TYPES: tuple[str, ...] = get_args(FeatureType)
NORMALISATIONS: tuple[str, ...] = get_args(Normalisation)
SIDES = ("item", "user")
ARRAY_SEPARATOR = "|"  # between the values of an array feature held in one text cell (CSV)


@dataclass(frozen=True)
class FeatureSpec:
    """One declared feature, as the manifest records it.

    name:          the column that holds it (unique per side)
    type:          sparse, array, continuous or embedding
    normalisation: continuous features only: standard, log-standard or none
    vocab_size:    sparse / array: distinct values over the whole table (missing not counted)
    coverage:      share of rows (items or users) that have a value, 0..1
    dim:           embedding features only: the vector width
    """

    name: str
    type: FeatureType
    normalisation: Normalisation | None = None
    vocab_size: int | None = None
    coverage: float | None = None
    dim: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"a feature needs a name, got {self.name!r}")
        if self.type not in FEATURE_TYPES:
            raise ConfigError(
                f"feature {self.name!r}: unknown type {self.type!r}; valid types: {', '.join(FEATURE_TYPES)}"
            )
        if self.type == "continuous":
            if self.normalisation is None:
                object.__setattr__(self, "normalisation", "standard")
            elif self.normalisation not in NORMALISATIONS:
                raise ConfigError(
                    f"feature {self.name!r}: unknown normalisation {self.normalisation!r}; "
                    f"valid normalisations: {', '.join(NORMALISATIONS)}"
                )
        elif self.normalisation is not None:
            raise ConfigError(f"feature {self.name!r}: only continuous features take a normalisation")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @staticmethod
    def from_dict(record: Any, where: str) -> FeatureSpec:
        if not isinstance(record, dict) or not isinstance(record.get("name"), str):
            raise DataError(f"{where}: a feature entry should be an object with a name, got {record!r}")
        unknown = sorted(set(record) - set(FeatureSpec.__dataclass_fields__))
        if unknown:
            raise DataError(f"{where}: feature {record['name']!r} has unknown keys {', '.join(unknown)}")
        try:
            return FeatureSpec(**record)
        except ConfigError as exc:
            raise DataError(f"{where}: {exc}") from None

    def describe(self) -> str:
        """One line for `genrec data info`, e.g. `genres array, 19 values, 100.0% of items`."""
        detail = {
            "sparse": f"{self.vocab_size} values",
            "array": f"{self.vocab_size} values",
            "continuous": f"{self.normalisation}",
            "embedding": f"dim {self.dim}",
        }[self.type]
        coverage = "" if self.coverage is None else f", {100 * self.coverage:.1f}% covered"
        return f"{self.type} ({detail}{coverage})"


def parse_feature_option(text: str, flag: str = "--item-feature") -> FeatureSpec:
    """`COLUMN:TYPE[:NORMALISATION]` (e.g. `genres:array`, `price:continuous:log-standard`) as a spec."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(
            f"{flag} {text!r}: expected COLUMN:TYPE or COLUMN:continuous:NORMALISATION "
            f"(types: {', '.join(t for t in FEATURE_TYPES if t != 'embedding')})"
        )
    name, kind, *norm = parts
    if kind == "embedding":
        raise ConfigError(
            f"{flag} {text!r}: embedding features are attached to a prepared dataset with "
            f"`genrec data features DATASET --from-embeddings FILE`"
        )
    return FeatureSpec(name, kind, norm[0] if norm else None)  # type: ignore[arg-type]


def check_unique_names(specs: Iterable[FeatureSpec], where: str) -> None:
    """Raise naming the first feature declared twice."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"{where}: feature {spec.name!r} is declared twice")
        seen.add(spec.name)


def split_array_cells(column: pa.ChunkedArray, separator: str = ARRAY_SEPARATOR) -> pa.ChunkedArray:
    """A text column of `a|b|c` cells as a list column (empty cells and nulls: missing)."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return column
    cells = column.to_pylist()
    values = [None if cell is None else [v.strip() for v in cell.split(separator) if v.strip()] for cell in cells]
    return pa.chunked_array([pa.array(values, pa.list_(pa.string()))])


def _is_category(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)


def _first(mask: pa.ChunkedArray | pa.Array | np.ndarray) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def check_feature_column(
    column: pa.ChunkedArray, spec: FeatureSpec, where: str, row_label: Callable[[int], str]
) -> None:
    """Raise a `DataError` when `column` cannot hold `spec` (text declared continuous, NaN, a list
    declared sparse, ...); `where` names the table and `row_label(i)` its row i (a line, an id)."""
    t = column.type
    what = f"{where}, column {spec.name!r}"
    if pa.types.is_null(t):
        return  # no value in any row: missing everywhere
    if spec.type == "sparse" and not _is_category(t):
        hint = " (declare it array)" if pa.types.is_list(t) or pa.types.is_large_list(t) else ""
        raise DataError(f"{what} has type {t}; a sparse feature holds one string or integer per row{hint}")
    if spec.type == "array" and not ((pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_category(t.value_type)):
        raise DataError(f"{what} has type {t}; an array feature holds a list of strings or integers per row")
    if spec.type == "continuous":
        if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            sample = next((v for v in column.to_pylist() if v is not None), None)
            row = next((i for i, v in enumerate(column.to_pylist()) if v is not None), 0)
            raise DataError(
                f"{what} holds {t} values (e.g. {sample!r} on {row_label(row)}), which cannot be a continuous "
                f"feature; declare it sparse, or give numbers"
            )
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        present = ~np.asarray(pc.is_null(column))
        bad = present & ~np.isfinite(values)
        if bad.any():
            row = _first(bad)
            raise DataError(f"{what}, {row_label(row)}: value {values[row]} is not a finite number")
        if spec.normalisation == "log-standard" and (present & (values < 0)).any():
            row = _first(present & (values < 0))
            raise DataError(
                f"{what}, {row_label(row)}: value {values[row]} is negative, so it cannot be log-normalised "
                f"(use normalisation standard)"
            )
    if spec.type == "embedding":
        raise DataError(f"{what}: embedding features live in item_vectors.parquet, not in a table column")


def present_mask(column: pa.ChunkedArray) -> np.ndarray:
    """[R] bool: rows with a value (not null; lists: not empty)."""
    present = ~np.asarray(pc.is_null(column).to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        present &= np.asarray(pc.list_value_length(column).fill_null(0).to_numpy()) > 0
    return present


def category_values(column: pa.ChunkedArray) -> pa.Array:
    """The non-null category values of a sparse or array column, flattened ([L])."""
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        column = pc.list_flatten(column)
    return pc.drop_null(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)


def describe_features(
    table: pa.Table, specs: list[FeatureSpec], where: str, row_label: Callable[[int], str]
) -> list[FeatureSpec]:
    """The specs checked against `table`'s columns, with vocab_size and coverage filled in."""
    check_unique_names(specs, where)
    described = []
    for spec in specs:
        if spec.name not in table.column_names:
            has = [c for c in table.column_names if c not in ("item", "user", "raw_id")]
            raise DataError(f"{where}: no column {spec.name!r} for the feature; its columns are {', '.join(has)}")
        column = table[spec.name]
        check_feature_column(column, spec, where, row_label)
        coverage = round(float(present_mask(column).mean()), 4) if len(column) else 0.0
        vocab = len(pc.unique(category_values(column))) if spec.type in ("sparse", "array") else None
        described.append(replace(spec, vocab_size=vocab, coverage=coverage))
    return described


def features_to_manifest(item: list[FeatureSpec], user: list[FeatureSpec]) -> dict[str, list[dict[str, Any]]]:
    return {"item": [s.to_dict() for s in item], "user": [s.to_dict() for s in user]}


def features_from_manifest(manifest: dict[str, Any], where: str) -> dict[str, list[FeatureSpec]]:
    """{"item": [...], "user": [...]} of a manifest; a manifest without features (format 1) has none."""
    record = manifest.get("features") or {}
    if not isinstance(record, dict):
        raise DataError(f"{where}: 'features' should be an object with item and user lists")
    result = {}
    for side in SIDES:
        entries = record.get(side) or []
        if not isinstance(entries, list):
            raise DataError(f"{where}: features.{side} should be a list")
        specs = [FeatureSpec.from_dict(e, f"{where}: features.{side}") for e in entries]
        try:
            check_unique_names(specs, f"{where}: features.{side}")
        except ConfigError as exc:
            raise DataError(str(exc)) from None
        result[side] = specs
    return result


def missing_feature(side: str, name: str, dataset: str, specs: list[FeatureSpec]) -> ConfigError:
    """The error for a config naming a feature the dataset does not have, listing those it has."""
    has = ", ".join(f"{s.name} ({s.type})" for s in specs) or "none"
    return ConfigError(f"dataset {dataset} has no {side} feature {name!r}; its {side} features: {has}")
