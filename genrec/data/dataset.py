"""The canonical dataset on disk (see `genrec.data.prepare`) and its sequences in memory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genrec.data.features import FeatureSpec, features_from_manifest, missing_feature
from genrec.errors import ConfigError, DataError

MANIFEST = "manifest.json"
SPLIT_CASES = "split_cases.parquet"
ITEM_VECTORS = "item_vectors.parquet"  # embedding features: item int32 + one fixed-size list column each
FORMAT_VERSION = 2  # 2: typed features in the manifest
READABLE_VERSIONS = (1, 2)  # a format-1 dataset (prepared before features) loads with no features


@dataclass(frozen=True)
class Sequences:
    """Every user's events in time order, as flat arrays plus per-user offsets.

    items:      [E] int64, item indices (1..N) of all users, user 1's first
    timestamps: [E] int64, unix seconds, aligned with `items`
    offsets:    [M+2] int64; user u's events are items[offsets[u]:offsets[u+1]] (user 0 = padding, empty)
    """

    items: np.ndarray
    timestamps: np.ndarray
    offsets: np.ndarray

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 2

    @property
    def lengths(self) -> np.ndarray:
        """[M+1] int64 number of events per user (index 0 = padding user, 0 events)."""
        return np.diff(self.offsets)

    def user(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u] : self.offsets[u + 1]]

    def prefixes(self, ends: np.ndarray) -> Sequences:
        """A compact copy holding, for each user u, the events offsets[u]:ends[u].

        ends: [M+1] int64 absolute positions with offsets[u] <= ends[u] <= offsets[u+1].
        """
        starts = self.offsets[:-1]
        lengths = ends - starts
        index = flat_ranges(starts, lengths)
        offsets = np.zeros(len(self.offsets), dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return Sequences(self.items[index], self.timestamps[index], offsets)

    @staticmethod
    def from_users(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, num_users: int) -> Sequences:
        """Build from events already sorted by user (users: [E] int, 1..num_users)."""
        if len(users) and np.any(np.diff(users) < 0):
            raise DataError("interactions are not sorted by user")
        offsets = np.zeros(num_users + 2, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=num_users + 1), out=offsets[1:])
        return Sequences(items.astype(np.int64, copy=False), timestamps.astype(np.int64, copy=False), offsets)


def flat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for each (s, n), vectorised: [sum(lengths)] int64."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


class Dataset:
    """A canonical dataset folder: manifest, interactions, items and users tables."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        path = Path(path)
        if not path.is_dir():
            raise DataError(f"no dataset directory at {path} (create one with `genrec data prepare`)")
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise DataError(f"{path} is not a genrec dataset: no {MANIFEST} (create one with `genrec data prepare`)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{manifest_path}: not valid JSON ({exc})") from None
        if not isinstance(manifest, dict):
            raise DataError(f"{manifest_path}: expected a JSON object")
        if manifest.get("format_version") not in READABLE_VERSIONS:
            raise DataError(
                f"{manifest_path}: dataset format version {manifest.get('format_version')!r}, this genrec reads "
                f"{', '.join(map(str, READABLE_VERSIONS))}; prepare it again with `genrec data prepare --overwrite`"
            )
        for key in ("num_users", "num_items", "num_interactions"):
            value = manifest.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DataError(f"{manifest_path}: {key} should be a count, got {value!r}")
        for name, key in (
            ("interactions.parquet", "num_interactions"),
            ("items.parquet", "num_items"),
            ("users.parquet", "num_users"),
        ):
            table = path / name
            if not table.is_file():
                raise DataError(f"{path}: missing {name}; prepare the dataset again")
            try:
                rows = pq.read_metadata(table).num_rows
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{table}: not a readable Parquet file ({exc}); prepare the dataset again") from None
            if rows != manifest[key]:
                raise DataError(
                    f"{table} has {rows:,} rows but {MANIFEST} says {key} is {manifest[key]:,}: the files "
                    f"do not belong together; prepare the dataset again"
                )
        features_from_manifest(manifest, str(manifest_path))  # a malformed declaration fails here, not later
        return cls(path, manifest)

    @property
    def num_users(self) -> int:
        return int(self.manifest["num_users"])

    @property
    def num_items(self) -> int:
        return int(self.manifest["num_items"])

    @property
    def num_interactions(self) -> int:
        return int(self.manifest["num_interactions"])

    def _read(self, name: str, columns: dict[str, str]) -> pa.Table:
        """A table of the dataset, checked to hold `columns` (name -> kind: "int" or "any")."""
        path = self.path / name
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc}); prepare the dataset again") from None
        for column, kind in columns.items():
            if column not in table.column_names:
                raise DataError(f"{path}: no column {column!r}; prepare the dataset again")
            if kind == "int" and not pa.types.is_integer(table[column].type):
                raise DataError(f"{path}: column {column!r} has type {table[column].type}, expected integers")
        return table

    @cached_property
    def interactions(self) -> pa.Table:
        return self._read("interactions.parquet", {"user": "int", "item": "int", "timestamp": "int"})

    @cached_property
    def items(self) -> pa.Table:
        return self._read("items.parquet", {"item": "int", "raw_id": "any"})

    @cached_property
    def users(self) -> pa.Table:
        return self._read("users.parquet", {"user": "int", "raw_id": "any"})

    @cached_property
    def sequences(self) -> Sequences:
        table = self.interactions
        if table.num_rows != self.num_interactions:
            raise DataError(
                f"{self.path}: interactions.parquet has {table.num_rows} rows, manifest says {self.num_interactions}"
            )
        users, items = table["user"].to_numpy(), table["item"].to_numpy()
        for name, values, count in (("user", users, self.num_users), ("item", items, self.num_items)):
            if len(values) and (values.min() < 1 or values.max() > count):
                raise DataError(
                    f"{self.path / 'interactions.parquet'}: {name} indices run from {values.min()} to "
                    f"{values.max()}, but {MANIFEST} says there are {count:,} {name}s (1..{count}); "
                    f"prepare the dataset again"
                )
        return Sequences.from_users(users, items, table["timestamp"].to_numpy(), self.num_users)

    @property
    def has_timestamps(self) -> bool:
        """False when the release has no times (the timestamps are then positions in the sequence)."""
        return bool(self.manifest.get("has_timestamps", True))

    @cached_property
    def split_cases(self) -> pa.Table | None:
        """The split that came with the dataset (columns split, user, position, history_length), if any."""
        path = self.path / SPLIT_CASES
        return pq.read_table(path) if path.is_file() else None

    @cached_property
    def features(self) -> dict[str, list[FeatureSpec]]:
        """The declared features: {"item": [...], "user": [...]} (none for datasets prepared before them)."""
        return features_from_manifest(self.manifest, str(self.path / MANIFEST))

    def feature(self, side: str, name: str) -> FeatureSpec:
        """The spec of the `side` ("item" or "user") feature `name`; a ConfigError lists the ones there are."""
        for spec in self.features[side]:
            if spec.name == name:
                return spec
        error = missing_feature(side, name, str(self.path), self.features[side])
        if self.manifest.get("format_version", 1) < 2:  # prepared before genrec read features
            error = ConfigError(f"{error} (it was prepared by a genrec without features: prepare it again)")
        raise error

    @cached_property
    def item_vectors(self) -> pa.Table | None:
        """The embedding features' vectors (columns item, then one per feature), if any were attached."""
        path = self.path / ITEM_VECTORS
        if not path.is_file():
            return None
        table = self._read(ITEM_VECTORS, {"item": "int"})
        if table.num_rows != self.num_items:
            raise DataError(f"{path} has {table.num_rows:,} rows but the dataset has {self.num_items:,} items")
        return table

    def item_raw_ids(self) -> list:
        """Raw ids by item index: element i is the raw id of item i (element 0, padding, is None)."""
        return [None, *self.items["raw_id"].to_pylist()]

    def user_raw_ids(self) -> list:
        return [None, *self.users["raw_id"].to_pylist()]

    def summary(self) -> dict[str, Any]:
        """The manifest's counts and provenance, for `genrec data info`."""
        m = self.manifest
        counts = ("source", "num_users", "num_items", "num_interactions")
        rest = (
            "has_rating",
            "has_timestamps",
            "filters",
            "filter_report",
            "catalogue",
            "predefined_split",
            "text_fields",
            "preprocessing",
            "raw_path",
        )
        users, items, events = self.num_users, self.num_items, self.num_interactions
        shape = {
            "mean_history": round(events / users, 2) if users else 0.0,  # events per user
            "median_history": float(np.median(self.sequences.lengths[1:])) if users else 0.0,
            "density": float(f"{events / (users * items):.3g}") if users and items else 0.0,  # 1 - sparsity
        }
        features = {
            f"{side}_features": {s.name: s.describe() for s in specs} or None for side, specs in self.features.items()
        }
        return {
            "path": str(self.path),
            **{k: m.get(k) for k in counts},
            **shape,
            **{k: m.get(k) for k in rest},
            **features,
        }
