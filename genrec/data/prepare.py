"""Raw tables -> the canonical dataset: filter, re-index, sort, write (atomically).

The canonical dataset (a folder):
    interactions.parquet  user int32 (1..M), item int32 (1..N), timestamp int64 [, rating float32],
                          sorted by user, then timestamp, ties kept in raw-file order
    items.parquet         item int32 (1..N, row i is item i+1), raw_id, text / feature columns
    users.parquet         user int32 (1..M), raw_id [, feature columns]
    split_cases.parquet   only for datasets that come with their own split (see `RawTables`)
    item_vectors.parquet  only once embedding features are attached (`genrec.data.vectors`)
    manifest.json         source, counts, raw-file checksums, filters, catalogue report, and the typed
                          features (`features.item` / `features.user`, see `genrec.data.features`)
Index 0 is padding for items and users. Raw ids are numbered in sorted order, so for MovieLens
100K the indices equal the raw ids.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from genrec import __version__
from genrec.data.dataset import FORMAT_VERSION, MANIFEST, SPLIT_CASES, Dataset
from genrec.data.features import FeatureSpec, describe_features, features_to_manifest
from genrec.data.filters import Filters
from genrec.data.sources import RawTables, Source, get_source
from genrec.errors import ConfigError, DataError
from genrec.io import atomic_output_dir, check_output_not_input, sha256_file, write_json_atomic

log = logging.getLogger("genrec.data")

ORDER = "sorted by user, then timestamp; ties in time keep the raw file's line order (stable sort)"


@dataclass
class Canonical:
    """The canonical tables of a dataset before they are written."""

    interactions: pa.Table
    items: pa.Table
    users: pa.Table
    stats: dict[str, Any]
    split_cases: pa.Table | None = None  # a predefined split: split, user, position, history_length
    features: dict[str, list] = field(default_factory=dict)  # the manifest's features (see `describe_canonical`)


def prepare_dataset(
    source: str | Source,
    out: str | Path,
    raw: str | Path | None = None,
    filters: Filters | None = None,
    overwrite: bool = False,
    download: bool = True,
    **source_options: Any,
) -> Dataset:
    """Read a raw release, build the canonical dataset and write it to `out`.

    `out` is written through a temp folder and renamed at the end, so an error or Ctrl-C leaves no
    partial dataset; an existing non-empty `out` is refused unless `overwrite`.
    """
    src = get_source(source, **source_options) if isinstance(source, str) else source
    filters = filters or Filters()
    out = Path(out)
    started = time.perf_counter()
    raw_path = src.locate(raw, download).resolve()
    check_output_not_input(out, {"raw data": raw_path, **src.input_files()})
    with atomic_output_dir(out, overwrite) as tmp:
        log.info("reading %s from %s", src.name, raw_path)
        tables = src.read(raw_path)
        check_output_not_input(out, {f"raw file {path.name}": path for path in tables.files})
        log.info(
            "read %d interactions in %.1fs; building the canonical dataset",
            tables.interactions.num_rows,
            time.perf_counter() - started,
        )
        canonical = build_canonical(tables, filters)
        write_canonical(canonical, tmp)
        manifest = {
            "format": "genrec-dataset",
            "format_version": FORMAT_VERSION,
            "genrec_version": __version__,
            "source": src.name,
            "source_options": src.options(),
            "raw_path": str(raw_path),
            "raw_files": _checksums(tables.files, raw_path),
            **canonical.stats,
            "filters": filters.to_dict(),
            "text_fields": tables.text_fields,
            "features": canonical.features,
            "order": ORDER,
            "id_maps": {
                "item": "items.parquet column raw_id: row i is item index i+1 (index 0 = padding)",
                "user": "users.parquet column raw_id: row i is user index i+1",
            },
            "preprocessing": tables.info,
        }
        write_json_atomic(tmp / MANIFEST, manifest)
        log.info(
            "wrote %s: %d users, %d items, %d interactions (%.1fs)",
            out,
            manifest["num_users"],
            manifest["num_items"],
            manifest["num_interactions"],
            time.perf_counter() - started,
        )
    return Dataset.load(out)


def _checksums(files: list[Path], raw_path: Path) -> dict[str, dict[str, Any]]:
    root = raw_path if raw_path.is_dir() else raw_path.parent
    result = {}
    for path in files:
        path = Path(path).resolve()
        name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        result[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return result


def _encode(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Dense codes 0..K-1 of raw ids numbered in sorted order, and the sorted distinct raw ids."""
    uniques = pc.unique(column)
    uniques = uniques.take(pc.sort_indices(uniques))
    codes = pc.index_in(column, value_set=uniques).to_numpy()
    return codes.astype(np.int64, copy=False), uniques


def _stable_user_time_order(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """The permutation sorting events by (user, timestamp), ties kept in their current order."""
    if len(users) == 0:
        return np.arange(0, dtype=np.int64)
    t0, span = int(timestamps.min()), int(timestamps.max()) - int(timestamps.min()) + 1
    if span * (int(users.max()) + 1) < 2**62:  # one combined key: one sort instead of two
        return np.argsort(users * span + (timestamps - t0), kind="stable")
    order = np.argsort(timestamps, kind="stable")
    return order[np.argsort(users[order], kind="stable")]


def _compact(codes: np.ndarray, num_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the codes in use to 1..K (keeping their order); returns (new codes, used old codes)."""
    used = np.flatnonzero(np.bincount(codes, minlength=num_codes))
    remap = np.zeros(num_codes, dtype=np.int32)
    remap[used] = np.arange(1, len(used) + 1, dtype=np.int32)
    return remap[codes], used


def _attach(ids: pa.Array, meta: pa.Table | None, key: str, where: str) -> tuple[pa.Table, dict[str, int]]:
    """Columns of `meta` for each raw id in `ids` (null where `meta` has no row for it)."""
    if meta is None:
        return pa.table({}), {}
    column = meta[key]
    if column.type != ids.type:
        try:
            column = column.cast(ids.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(f"{where}: ids of type {column.type} do not match the interactions' {ids.type}") from None
    if len(pc.unique(column)) != len(column):
        counts = pc.value_counts(column)
        duplicated = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"]
        raise DataError(f"{where}: {key} {duplicated.as_py()!r} appears more than once")
    rows = pc.index_in(ids, value_set=column)
    found = len(rows) - rows.null_count
    report = {"metadata_rows": len(column), "without_metadata": rows.null_count, "metadata_only": len(column) - found}
    return meta.drop_columns([key]).take(rows), report


def _encode_against(column: pa.ChunkedArray, catalogue: pa.ChunkedArray, where: str) -> tuple[np.ndarray, pa.Array]:
    """Codes of raw ids in a given catalogue (sorted); an id outside it is an error."""
    uniques = pc.unique(catalogue)
    uniques = uniques.take(pc.sort_indices(uniques))
    codes = pc.index_in(column, value_set=uniques)
    if codes.null_count:
        first = column.filter(pc.is_null(codes))[0].as_py()
        raise DataError(f"{codes.null_count} events refer to items missing from {where} (first: {first!r})")
    return codes.to_numpy().astype(np.int64, copy=False), uniques


def build_canonical(tables: RawTables, filters: Filters) -> Canonical:
    """Filter, re-index and sort the raw tables (see the module docstring for the result)."""
    events = tables.interactions
    user_codes, user_ids = _encode(events["user"])
    if tables.catalogue == "metadata":
        if tables.items is None:
            raise DataError("the source declares its item table as the catalogue but gave no item table")
        item_codes, item_ids = _encode_against(events["item"], tables.items["item"], "the item table")
    else:
        item_codes, item_ids = _encode(events["item"])
    timestamps = events["timestamp"].to_numpy().astype(np.int64, copy=False)
    ratings = events["rating"].to_numpy() if "rating" in events.column_names else None
    if tables.split_cases is not None and filters != Filters():
        raise ConfigError(f"this dataset comes with its own split; filters cannot be applied ({filters.to_dict()})")

    order = _stable_user_time_order(user_codes, timestamps)
    keep, report = filters.apply(user_codes[order], item_codes[order], None if ratings is None else ratings[order])
    rows = order[keep]
    if len(rows) == 0:
        raise DataError(f"no interactions left after filtering ({filters.to_dict()}; counts: {report})")

    users, used_users = _compact(user_codes[rows], len(user_ids))
    if tables.catalogue == "metadata":
        items, used_items = (item_codes[rows] + 1).astype(np.int32), np.arange(len(item_ids))
    else:
        items, used_items = _compact(item_codes[rows], len(item_ids))
    columns = {"user": users, "item": items, "timestamp": timestamps[rows]}
    if ratings is not None:
        columns["rating"] = ratings[rows].astype(np.float32)
    interactions = pa.table(columns)

    item_raw, user_raw = item_ids.take(used_items), user_ids.take(used_users)
    item_meta, item_report = _attach(item_raw, tables.items, "item", "item metadata")
    user_meta, _ = _attach(user_raw, tables.users, "user", "user table")
    items_table = pa.table({"item": np.arange(1, len(item_raw) + 1, dtype=np.int32), "raw_id": item_raw})
    for name in item_meta.column_names:
        items_table = items_table.append_column(name, item_meta[name])
    users_table = pa.table({"user": np.arange(1, len(user_raw) + 1, dtype=np.int32), "raw_id": user_raw})
    for name in user_meta.column_names:
        users_table = users_table.append_column(name, user_meta[name])

    item_specs = _declared(items_table, tables.item_features, "item")
    user_specs = _declared(users_table, tables.user_features, "user")
    split_cases = None
    if tables.split_cases is not None:
        split_cases = _index_split_cases(tables.split_cases, user_raw, np.bincount(users, minlength=len(user_raw) + 1))
    rule = (
        "every item of the dataset's own item table"
        if tables.catalogue == "metadata"
        else "the items that occur in the interactions after filtering"
    )
    stats = {
        "num_users": len(user_raw),
        "num_items": len(item_raw),
        "num_interactions": len(rows),
        "has_rating": ratings is not None,
        "has_timestamps": tables.has_timestamps,
        "filter_report": report,
        "catalogue": {
            "rule": rule,
            "items_in_metadata": item_report.get("metadata_rows"),
            "dropped_metadata_only_items": item_report.get("metadata_only"),
            "items_without_metadata": item_report.get("without_metadata"),
        },
    }
    if split_cases is not None:
        names, counts = np.unique(split_cases["split"].to_numpy(zero_copy_only=False), return_counts=True)
        stats["predefined_split"] = {str(n): int(c) for n, c in zip(names, counts)}
    features = features_to_manifest(item_specs, user_specs)
    return Canonical(interactions, items_table, users_table, stats, split_cases, features)


def _declared(table: pa.Table, specs: list[FeatureSpec], side: str) -> list[FeatureSpec]:
    """The features of a canonical table with their statistics; features without any value are left
    out (logged), since no model can learn from them."""
    raw_ids = table["raw_id"]
    described = describe_features(table, specs, f"the {side} table", lambda row: f"{side} {raw_ids[row].as_py()!r}")
    for spec in described:
        if not spec.coverage:
            log.info("%s feature %r has no value for any %s: not declared", side, spec.name, side)
    return [spec for spec in described if spec.coverage]


def _index_split_cases(cases: pa.Table, user_raw: pa.Array, lengths: np.ndarray) -> pa.Table:
    """Map a predefined split's raw user ids to indices and check every position is in range."""
    users = pc.index_in(cases["user"], value_set=user_raw)
    if users.null_count:
        first = cases["user"].filter(pc.is_null(users))[0].as_py()
        raise DataError(f"the predefined split names user {first!r}, who has no interactions")
    users = users.to_numpy().astype(np.int64) + 1
    positions = cases["position"].to_numpy().astype(np.int64)
    history = cases["history_length"].to_numpy().astype(np.int64)
    bad = (positions >= lengths[users]) | (history > positions) | (history < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"predefined split case {i} (user {cases['user'][i].as_py()!r}) points outside the user's sequence"
        )
    return pa.table(
        {
            "split": cases["split"],
            "user": users.astype(np.int32),
            "position": positions,
            "history_length": history.astype(np.int32),
        }
    )


def write_canonical(canonical: Canonical, folder: Path) -> None:
    pq.write_table(canonical.interactions, folder / "interactions.parquet", compression="zstd")
    pq.write_table(canonical.items, folder / "items.parquet", compression="zstd")
    pq.write_table(canonical.users, folder / "users.parquet", compression="zstd")
    if canonical.split_cases is not None:
        pq.write_table(canonical.split_cases, folder / SPLIT_CASES, compression="zstd")
