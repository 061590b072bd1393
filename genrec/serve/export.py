"""Export a trained run's item embeddings for retrieval outside genrec.

Files written to the export folder (default `RUN_DIR/export`):

    item_embeddings.npy  float32 [N, D]; row r is item index r + 1 (index 0, padding, is left out)
    item_ids.json        [N] raw item ids (as in the source data), aligned with the rows
    embedding.fbin       the same matrix in the ANN-tool layout: int32 N, int32 D, then N*D float32
    id.u64bin            the item indices 1..N: int32 N, int32 1, then N uint64 (row r -> id r + 1)
    export.json          what was exported: model, dimension, whether vectors are L2-normalised, files
    index.faiss, index.json  with `index=`: a FAISS inner-product index of the rows (`genrec.serve.index`)

Scores are inner products of these vectors with the model's user vectors (cosine similarities for
models with L2-normalised outputs, e.g. HSTU), the same scores the evaluator ranks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from genrec.checkpoints import BEST_CHECKPOINT, load_weights
from genrec.errors import ConfigError
from genrec.io import atomic_output_dir, check_output_not_input
from genrec.models.base_config import GenerativeConfig
from genrec.run_dir import RUN_FILES, RunDir
from genrec.serve.index import INDEX_FILE, INDEX_META, IndexParams, ItemIndex, require_faiss

EMBEDDINGS = "item_embeddings.npy"
IDS = "item_ids.json"
FBIN = "embedding.fbin"
U64BIN = "id.u64bin"


def write_bin(path: Path, matrix: np.ndarray) -> None:
    """The .fbin / .u64bin layout: int32 rows, int32 columns, then the values in row-major order."""
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-d matrix, got shape {matrix.shape}")
    with open(path, "wb") as f:
        np.array(matrix.shape, dtype=np.int32).tofile(f)
        np.ascontiguousarray(matrix).tofile(f)


def read_bin(path: Path, dtype: np.dtype) -> np.ndarray:
    """Read a matrix written by `write_bin`."""
    with open(path, "rb") as f:
        rows, cols = np.fromfile(f, dtype=np.int32, count=2)
        return np.fromfile(f, dtype=dtype, count=int(rows) * int(cols)).reshape(int(rows), int(cols))


def export_item_embeddings(
    run_dir: str | Path,
    out: str | Path | None = None,
    overwrite: bool = False,
    index: str | None = None,
    index_params: IndexParams | None = None,
) -> Path:
    """Write the best checkpoint's item embeddings of `run_dir` (see the module docstring); returns the folder.

    index: also build a FAISS index of them: exact | hnsw | ivf (see `genrec.serve.index`).
    """
    if index is not None:
        require_faiss()  # before any work: the extra may be missing
    from genrec.runner import build_model, dataset_of_run

    run = RunDir.open(run_dir)
    config = run.config()
    checkpoint = run.path / BEST_CHECKPOINT
    if config.model.name == "popularity":
        raise ConfigError("the popularity baseline has no item embeddings to export")
    if isinstance(config.model, GenerativeConfig):
        raise ConfigError(
            f"model {config.model.name!r} generates semantic IDs and has no item embedding table to "
            f"export; its item representation is the SID file (model.sid_file or the dataset's SIDs)"
        )
    if config.model.name == "ranker":
        raise ConfigError(
            "a ranker scores (history, candidate) pairs and has no item embedding table to export; "
            "export its retrieval run, and rerank with genrec rank RETRIEVAL_RUN RANKER_RUN"
        )
    if not checkpoint.is_file():
        raise ConfigError(f"{run.path} has no {BEST_CHECKPOINT}: train the run first (genrec train)")
    dataset = dataset_of_run(run, config, download=False)
    out = Path(out) if out is not None else run.path / "export"
    check_output_not_input(out, {**{f"run's {name}": run.path / name for name in RUN_FILES}, "dataset": dataset.path})
    model = build_model(dataset, config)
    load_weights(model, checkpoint)
    with torch.no_grad():
        vectors = model.eval().all_item_vectors()[1:].float().numpy()  # [N, D]
    norms = np.linalg.norm(vectors, axis=1)
    raw_ids = dataset.item_raw_ids()[1:]
    with atomic_output_dir(out, overwrite) as tmp:
        np.save(tmp / EMBEDDINGS, vectors)
        (tmp / IDS).write_text(json.dumps(raw_ids))
        write_bin(tmp / FBIN, vectors.astype(np.float32))
        write_bin(tmp / U64BIN, np.arange(1, len(vectors) + 1, dtype=np.uint64)[:, None])
        summary = {
            "run_dir": str(run.path),
            "model": config.model.name,
            "num_items": int(vectors.shape[0]),
            "dim": int(vectors.shape[1]),
            "l2_normalised": bool(np.allclose(norms, 1.0, atol=1e-4)),
            "score": "inner product",
            "files": [EMBEDDINGS, IDS, FBIN, U64BIN],
        }
        if index is not None:
            ItemIndex.build(vectors, index, index_params).save(tmp)
            summary.update(index=index, files=[*summary["files"], INDEX_FILE, INDEX_META])
        (tmp / "export.json").write_text(json.dumps(summary, indent=2))
    return out
