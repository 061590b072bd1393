"""Features as model inputs: vocabularies and statistics fitted on the training part of a split.

`fit_features(dataset, split.train)` turns a dataset's declared features (`genrec.data.features`)
into arrays indexed by item index (or user index), with row 0 the padding item (user):

    sparse      SparseFeature.ids        [R+1] int64: 0 = missing (and padding), 1 = out of
                                         vocabulary, 2.. = the fitted vocabulary
    array       ArrayFeature.values      [L] int64 ids (1 = out of vocabulary, 2.. = vocabulary)
                ArrayFeature.offsets     [R+2] int64: row r holds values[offsets[r]:offsets[r+1]]
                                         (padding and missing rows hold none); `padded(K)` gives
                                         [R+1, K] int64 with 0 as padding
    continuous  ContinuousFeature.values [R+1] float32, normalised (0 where missing)
                ContinuousFeature.present [R+1] bool
    embedding   EmbeddingFeature.vectors [R+1, D] float32 (zero where missing)
                EmbeddingFeature.present [R+1] bool

R is the number of items (N) or users (M). Vocabularies and normalisation statistics come from the
rows that occur in the training events only, so a value seen only in validation or test items maps
to the out-of-vocabulary id: nothing leaks from the evaluation targets. A value is in the vocabulary
when at least `min_count` training rows have it; ids follow training frequency (most frequent = 2).
Embeddings are fixed inputs and are not fitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genrec.data.dataset import Dataset, Sequences
from genrec.data.features import FeatureSpec, category_values
from genrec.errors import ConfigError, DataError

MISSING, OOV = 0, 1  # reserved ids of sparse and array features; the vocabulary starts at 2
NUM_RESERVED = 2


@dataclass(frozen=True)
class SparseFeature:
    """One categorical value per row. ids: [R+1] int64 (0 missing, 1 OOV, 2.. vocab)."""

    spec: FeatureSpec
    ids: np.ndarray
    vocab: list  # vocab[i] is the value of id i + 2

    @property
    def num_embeddings(self) -> int:
        """Rows an embedding table needs: the vocabulary plus the missing and OOV ids."""
        return len(self.vocab) + NUM_RESERVED


@dataclass(frozen=True)
class ArrayFeature:
    """A list of categorical values per row, flat: values [L] int64 ids (1 OOV, 2.. vocab) and
    offsets [R+2] int64 (row r: values[offsets[r]:offsets[r+1]])."""

    spec: FeatureSpec
    values: np.ndarray
    offsets: np.ndarray
    vocab: list

    @property
    def num_embeddings(self) -> int:
        return len(self.vocab) + NUM_RESERVED

    @property
    def lengths(self) -> np.ndarray:
        """[R+1] int64 values per row."""
        return np.diff(self.offsets)

    def padded(self, max_count: int | None = None) -> np.ndarray:
        """[R+1, K] int64: each row's first K ids, padded with 0 (K = max_count, default the longest row)."""
        lengths = self.lengths
        width = int(lengths.max(initial=0)) if max_count is None else max_count
        out = np.zeros((len(lengths), width), dtype=np.int64)
        keep = np.minimum(lengths, width)
        rows = np.repeat(np.arange(len(lengths)), keep)
        cols = np.arange(int(keep.sum())) - np.repeat(np.cumsum(keep) - keep, keep)
        out[rows, cols] = self.values[np.repeat(self.offsets[:-1], keep) + cols]
        return out


@dataclass(frozen=True)
class ContinuousFeature:
    """A number per row: values [R+1] float32 normalised (0 where missing), present [R+1] bool.
    The normalised value is ((log1p(x) if log-standard else x) - mean) / std."""

    spec: FeatureSpec
    values: np.ndarray
    present: np.ndarray
    mean: float
    std: float


@dataclass(frozen=True)
class EmbeddingFeature:
    """A fixed vector per row: vectors [R+1, D] float32 (zero where missing), present [R+1] bool."""

    spec: FeatureSpec
    vectors: np.ndarray
    present: np.ndarray

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


Feature = Union[SparseFeature, ArrayFeature, ContinuousFeature, EmbeddingFeature]


@dataclass(frozen=True)
class FeatureTables:
    """The model-ready features of a dataset: item features (rows = item indices 0..N) and user
    features (rows = user indices 0..M), by name, in the order they were asked for."""

    item: dict[str, Feature]
    user: dict[str, Feature]
    num_items: int
    num_users: int
    fitted_on: str  # "training events" or "all rows" (no split given)


def fit_features(
    dataset: Dataset,
    train: Sequences | None,
    item: list[str] | None = None,
    user: list[str] | None = None,
    min_count: int = 1,
) -> FeatureTables:
    """The features named in `item` / `user` (None: every declared one), fitted on the items and users
    that occur in `train` (a split's training events; None fits on every row, for data without a split).

    A name the dataset does not declare is a ConfigError listing the ones it has.
    """
    if min_count < 1:
        raise ConfigError(f"min_count must be >= 1, got {min_count}")
    if train is None:
        item_rows, user_rows = np.arange(1, dataset.num_items + 1), np.arange(1, dataset.num_users + 1)
    else:
        if train.num_users != dataset.num_users:
            raise ConfigError(f"the training events have {train.num_users} users, the dataset {dataset.num_users}")
        item_rows = np.unique(train.items)
        user_rows = np.flatnonzero(train.lengths > 0)
    tables = {"item": dataset.items, "user": dataset.users}
    rows = {"item": item_rows, "user": user_rows}
    wanted = {"item": item, "user": user}
    fitted: dict[str, dict[str, Feature]] = {}
    for side in ("item", "user"):
        names = [s.name for s in dataset.features[side]] if wanted[side] is None else list(wanted[side] or [])
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise ConfigError(f"{side} feature {twice!r} is named twice")
        fitted[side] = {}
        for name in names:
            spec = dataset.feature(side, name)
            if spec.type == "embedding":
                fitted[side][name] = _embedding(dataset, spec)
            else:
                fitted[side][name] = fit_column(tables[side][name], spec, rows[side], min_count)
    return FeatureTables(
        fitted["item"],
        fitted["user"],
        dataset.num_items,
        dataset.num_users,
        "all rows" if train is None else "training events",
    )


def fit_column(column: pa.ChunkedArray, spec: FeatureSpec, train_rows: np.ndarray, min_count: int = 1) -> Feature:
    """One feature from its table column (row i = index i + 1), fitted on `train_rows` (indices 1..R)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    train = column.take(pa.array(np.asarray(train_rows, dtype=np.int64) - 1))
    if spec.type == "continuous":
        return _continuous(column, spec, train)
    if pa.types.is_null(column.type):  # no value anywhere
        column = pa.nulls(len(column), pa.list_(pa.string()) if spec.type == "array" else pa.string())
        train = column.take(pa.array(np.arange(len(train)), pa.int64()))
    vocab = _vocabulary(category_values(train), min_count)
    if spec.type == "sparse":
        ids = _ids(column, vocab)
        return SparseFeature(spec, np.concatenate([[MISSING], ids]), vocab.to_pylist())
    if spec.type == "array":
        lengths = pc.list_value_length(column).fill_null(0).to_numpy().astype(np.int64)
        flat = pc.list_flatten(column)
        owner = np.repeat(np.arange(len(column)), lengths)[np.asarray(pc.is_valid(flat))]
        values = _ids(pc.drop_null(flat), vocab)
        offsets = np.zeros(len(column) + 2, dtype=np.int64)
        np.cumsum(np.bincount(owner + 1, minlength=len(column) + 1), out=offsets[1:])
        return ArrayFeature(spec, values, offsets, vocab.to_pylist())
    raise ConfigError(f"feature {spec.name!r} of type {spec.type} is not a table column")


def _vocabulary(values: pa.Array, min_count: int) -> pa.Array:
    """The values seen at least `min_count` times, most frequent first (ties: in sorted order)."""
    counts = pc.value_counts(values)
    if len(counts) == 0:
        return values.slice(0, 0)
    table = pa.table({"value": counts.field("values"), "count": counts.field("counts")})
    table = table.filter(pc.greater_equal(table["count"], min_count))
    order = pc.sort_indices(table, sort_keys=[("count", "descending"), ("value", "ascending")])
    return table["value"].take(order).combine_chunks()


def _ids(values: pa.Array, vocab: pa.Array) -> np.ndarray:
    """[len(values)] int64: 0 for a null, 1 for a value outside `vocab`, else its position + 2."""
    if len(vocab) and values.type != vocab.type:
        values = values.cast(vocab.type)
    index = pc.index_in(values, value_set=vocab) if len(vocab) else pa.nulls(len(values), pa.int32())
    ids = np.asarray(index.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64) + NUM_RESERVED
    ids[ids == NUM_RESERVED - 1] = OOV
    ids[np.asarray(pc.is_null(values).to_numpy(zero_copy_only=False), dtype=bool)] = MISSING
    return ids


def _continuous(column: pa.Array, spec: FeatureSpec, train: pa.Array) -> ContinuousFeature:
    def numbers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        present = np.asarray(pc.is_valid(array).to_numpy(zero_copy_only=False), dtype=bool)
        x = np.zeros(len(array), dtype=np.float64)
        if not pa.types.is_null(array.type):
            x[present] = pc.drop_null(array).cast(pa.float64()).to_numpy()
        if not np.isfinite(x).all():
            raise DataError(f"continuous feature {spec.name!r} holds NaN or infinite values; prepare it again")
        return (np.log1p(np.maximum(x, 0)) if spec.normalisation == "log-standard" else x), present

    x, present = numbers(column)
    fit, fit_present = numbers(train)
    mean, std = 0.0, 1.0
    if spec.normalisation != "none" and fit_present.any():
        mean = float(fit[fit_present].mean())
        std = float(fit[fit_present].std()) or 1.0
    values = np.where(present, (x - mean) / std, 0.0).astype(np.float32)
    return ContinuousFeature(
        spec, np.concatenate([[0.0], values]).astype(np.float32), np.concatenate([[False], present]), mean, std
    )


def _embedding(dataset: Dataset, spec: FeatureSpec) -> EmbeddingFeature:
    table = dataset.item_vectors
    if table is None or spec.name not in table.column_names:
        raise DataError(
            f"{dataset.path}: the manifest declares embedding {spec.name!r} but item_vectors.parquet lacks it"
        )
    column = table[spec.name].combine_chunks()
    present = np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=bool)
    dim = column.type.list_size
    vectors = np.zeros((dataset.num_items + 1, dim), dtype=np.float32)
    vectors[1:][present] = pc.list_flatten(column).to_numpy().astype(np.float32).reshape(-1, dim)
    return EmbeddingFeature(spec, vectors, np.concatenate([[False], present]))
