"""Embedding features: fixed vectors attached to a prepared dataset's items (`genrec data features`).

They are kept apart from the item table, in `item_vectors.parquet`: column `item` (int32, row i is
item i + 1) and one `fixed_size_list<float32>[D]` column per embedding feature, null for an item
without a vector. Inputs `read_vectors` accepts:

    .npy      float [N, D], row r = item index r + 1 (as `genrec export` writes), or [N+1, D] with
              row 0 for padding (ignored)
    .npz      genrec's item-embedding cache (HLLM's frozen item LLM, `genrec sid build`):
              `embeddings` [N+1, D], row 0 = padding
    .parquet  columns `item` (raw item ids) and `vector` (a list of floats per row); items it does
              not list have no vector
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from genrec.data.dataset import FORMAT_VERSION, ITEM_VECTORS, MANIFEST, Dataset
from genrec.data.features import FeatureSpec
from genrec.errors import ConfigError, DataError
from genrec.io import atomic_output_file, exclusive_lock, write_json_atomic

log = logging.getLogger("genrec.data")


def read_vectors(path: str | Path, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(vectors [N, D] float32, present [N] bool) for the dataset's items 1..N, from a file above."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"--from-embeddings {path}: no such file")
    if path.suffix == ".parquet":
        return _keyed_vectors(path, dataset)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "embeddings" not in data:
                    raise DataError(f"{path}: no 'embeddings' array (arrays: {', '.join(data.files)})")
                matrix = data["embeddings"]
        elif path.suffix == ".npy":
            matrix = np.load(path, allow_pickle=False)
        else:
            raise DataError(f"{path}: expected a .npy, .npz or .parquet file of item vectors")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable NumPy file ({exc})") from None
    n = dataset.num_items
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number) or matrix.shape[1] == 0:
        raise DataError(f"{path}: expected a 2-d float array [items, dim], got {matrix.dtype} of shape {matrix.shape}")
    if matrix.shape[0] not in (n, n + 1):
        raise DataError(
            f"{path}: has {matrix.shape[0]:,} rows but the dataset has {n:,} items (expected {n:,} rows, "
            f"row r for item r + 1, or {n + 1:,} with row 0 for padding)"
        )
    vectors = np.asarray(matrix[matrix.shape[0] - n :], dtype=np.float32)
    _check_finite(vectors, path, dataset)
    return vectors, np.ones(n, dtype=bool)


def _keyed_vectors(path: Path, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    absent = [c for c in ("item", "vector") if c not in table.column_names]
    if absent:
        raise DataError(f"{path}: no column {', '.join(map(repr, absent))} (expected item and vector)")
    raw_ids = dataset.items["raw_id"]
    ids = table["item"]
    try:
        ids = ids.cast(raw_ids.type) if ids.type != raw_ids.type else ids
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"{path}: item ids of type {ids.type} do not match the dataset's {raw_ids.type}") from None
    rows = pc.index_in(ids, value_set=raw_ids.combine_chunks())
    if rows.null_count:
        first = ids.filter(pc.is_null(rows))[0].as_py()
        raise DataError(
            f"{path}: {rows.null_count:,} vectors are for items the dataset does not have (first: {first!r})"
        )
    rows = rows.to_numpy()
    if len(np.unique(rows)) != len(rows):
        raise DataError(f"{path}: item {ids[int(_first_repeat(rows))].as_py()!r} has more than one vector")
    column = table["vector"]
    if not (
        pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or pa.types.is_large_list(column.type)
    ):
        raise DataError(f"{path}: column 'vector' has type {column.type}; expected a list of floats per row")
    widths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    valid = ~np.asarray(pc.is_null(column))
    width = int(widths[valid][0]) if valid.any() else 0
    wrong = valid & (widths != width)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise DataError(f"{path}, row {row + 1}: a vector of width {int(widths[row])}; the first has width {width}")
    if width == 0:
        raise DataError(f"{path}: no vector has any value")
    vectors = np.zeros((dataset.num_items, width), dtype=np.float32)
    flat = pc.list_flatten(column.filter(pa.array(valid))).to_numpy(zero_copy_only=False)
    vectors[rows[valid]] = np.asarray(flat, dtype=np.float32).reshape(-1, width)
    present = np.zeros(dataset.num_items, dtype=bool)
    present[rows[valid]] = True
    _check_finite(vectors, path, dataset)
    return vectors, present


def _first_repeat(rows: np.ndarray) -> int:
    _, first, counts = np.unique(rows, return_index=True, return_counts=True)
    return int(first[counts > 1].min())


def _check_finite(vectors: np.ndarray, path: Path, dataset: Dataset) -> None:
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raw = dataset.item_raw_ids()[row + 1]
        raise DataError(f"{path}: the vector of item {raw!r} (index {row + 1}) holds NaN or infinite values")


def attach_embedding(
    dataset: Dataset, name: str, vectors: np.ndarray, present: np.ndarray, overwrite: bool = False
) -> Dataset:
    """Store `vectors` [N, D] (rows where `present` [N] is False: no vector) as the embedding feature
    `name` of `dataset`, in place: item_vectors.parquet first, then the manifest, each written atomically."""
    n = dataset.num_items
    if vectors.ndim != 2 or vectors.shape[0] != n or present.shape != (n,):
        raise DataError(f"expected vectors of shape [{n}, D] and a mask [{n}], got {vectors.shape} and {present.shape}")
    existing = next((s for s in dataset.features["item"] if s.name == name), None)
    if existing is not None and (existing.type != "embedding" or not overwrite):
        hint = "pass --overwrite to replace it" if existing.type == "embedding" else "choose another --name"
        raise ConfigError(f"{dataset.path}: the dataset already has an item feature {name!r} ({existing.type}); {hint}")
    with exclusive_lock(dataset.path.parent / f".{dataset.path.name}.lock", str(dataset.path)):
        fresh = Dataset.load(dataset.path)  # what is on disk now, under the lock
        table = fresh.item_vectors or pa.table({"item": pa.array(np.arange(1, n + 1), pa.int32())})
        flat = pa.array(vectors.reshape(-1).astype(np.float32))
        column = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1], mask=pa.array(~present))
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, column)
        else:
            table = table.append_column(name, column)
        with atomic_output_file(fresh.path / ITEM_VECTORS) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        spec = FeatureSpec(
            name, "embedding", coverage=round(float(present.mean()), 4) if n else 0.0, dim=vectors.shape[1]
        )
        manifest = dict(fresh.manifest)
        features = dict(manifest.get("features") or {})
        items = [s for s in features.get("item", []) if s.get("name") != name]
        manifest["features"] = {"item": [*items, spec.to_dict()], "user": features.get("user", [])}
        manifest["format_version"] = FORMAT_VERSION
        write_json_atomic(fresh.path / MANIFEST, manifest)
    log.info("attached %s: %d of %d items have a %d-wide vector", name, int(present.sum()), n, vectors.shape[1])
    return Dataset.load(dataset.path)


def embed_item_texts(
    dataset: Dataset,
    model: str,
    gguf_file: str | None = None,
    pooling: str = "mean",
    max_tokens: int = 256,
    batch_size: int = 32,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors [N, D] float32, present [N] bool, all True): embeddings of the items' text (the HLLM text format) by a local Hugging Face
    model, through genrec's item-embedding cache (so HLLM and `genrec sid build` share them)."""
    from genrec.data.raw import cache_dir
    from genrec.items.llm_embed import cached_item_embeddings, resolve_model_path  # late: imports torch
    from genrec.items.text import TextTemplate, render_item_texts

    if pooling not in ("last", "mean"):
        raise ConfigError(f"--pooling {pooling!r}: frozen item embeddings use last or mean")
    texts = render_item_texts(dataset, TextTemplate())
    if texts.empty == dataset.num_items:
        raise DataError(f"{dataset.path}: the items have no text to embed (text fields: none)")
    location = resolve_model_path(model, gguf_file)
    table, _ = cached_item_embeddings(
        location,
        texts.texts,
        pooling,  # type: ignore[arg-type]
        max_tokens,
        cache_dir() / "item-embeddings",
        batch_size,
        device,
        progress,
    )
    return np.asarray(table[1:], dtype=np.float32), np.ones(dataset.num_items, dtype=bool)
