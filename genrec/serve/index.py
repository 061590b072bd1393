"""An approximate nearest-neighbour index of a run's item vectors (FAISS, inner product).

`genrec export RUN --index exact|hnsw|ivf` writes `index.faiss` and `index.json` next to the
exported embeddings; `Recommender.from_run(RUN, index=EXPORT_DIR)` searches it instead of scoring
the whole catalogue. Row r of the index is item index r + 1 (as in `item_embeddings.npy`).

    exact  IndexFlatIP: every item, the same ranking as the evaluator (a baseline for the others)
    hnsw   IndexHNSWFlat, M links per node; `ef_search` candidates per query (recall vs speed)
    ivf    IndexIVFFlat, `nlist` k-means cells; `nprobe` cells searched per query

Filters hold with every kind: a search fetches more than k (k plus the row's banned items), drops
the banned ones and fetches again, wider, if fewer than k remain.

`faiss.read_index` parses a binary file; genrec reads only indexes it wrote beside a run it trusts
no more than the run itself (the format holds no code, but FAISS does not promise to reject every
malformed file gracefully).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genrec.errors import ConfigError, DataError
from genrec.optional import require

INDEX_FILE = "index.faiss"
INDEX_META = "index.json"
IndexKind = Literal["exact", "hnsw", "ivf"]
INDEX_KINDS: tuple[str, ...] = ("exact", "hnsw", "ivf")


def require_faiss() -> Any:
    # faiss logs each SIMD build it fails to find at INFO level, which genrec's CLI would print
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    return require("faiss")


@dataclass
class IndexParams:
    """How an index is built and searched (defaults chosen in BENCHMARKS.md, "ANN index")."""

    hnsw_m: int = 32  # links per HNSW node
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128  # candidates per HNSW query
    ivf_nlist: int | None = None  # k-means cells; default 4 * sqrt(N)
    ivf_nprobe: int = 32  # cells searched per IVF query

    def nlist(self, num_items: int) -> int:
        return self.ivf_nlist or max(1, min(num_items // 39, int(4 * math.sqrt(num_items))))


@dataclass
class ItemIndex:
    """A FAISS index over items 1..N; `search` returns item indices (1-based) and inner products."""

    index: Any
    kind: str
    num_items: int
    dim: int
    params: IndexParams = field(default_factory=IndexParams)

    @classmethod
    def build(
        cls, vectors: np.ndarray, kind: str = "hnsw", params: IndexParams | None = None, seed: int = 0
    ) -> ItemIndex:
        """vectors: [N, D] float32, row r = item r + 1."""
        faiss = require_faiss()
        if kind not in INDEX_KINDS:
            raise ConfigError(f"unknown index kind {kind!r}; valid: {', '.join(INDEX_KINDS)}")
        params = params or IndexParams()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        N, D = vectors.shape
        if kind == "exact":
            index = faiss.IndexFlatIP(D)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(D, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = params.hnsw_ef_construction
        else:
            quantizer = faiss.IndexFlatIP(D)
            index = faiss.IndexIVFFlat(quantizer, D, params.nlist(N), faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            index.train(vectors)
        index.add(vectors)
        built = cls(index, kind, N, D, params)
        built.configure()
        return built

    def configure(self) -> None:
        """Apply the search-time parameters."""
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = self.params.hnsw_ef_search
        elif self.kind == "ivf":
            self.index.nprobe = self.params.ivf_nprobe

    def save(self, folder: Path) -> None:
        faiss = require_faiss()
        faiss.write_index(self.index, str(folder / INDEX_FILE))
        meta = {
            "kind": self.kind,
            "num_items": self.num_items,
            "dim": self.dim,
            "metric": "inner product",
            "row": "item index - 1",
            "params": asdict(self.params),
        }
        (folder / INDEX_META).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> ItemIndex:
        """An index written by `save`: its folder (an export folder) or its `index.faiss`."""
        faiss = require_faiss()
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        meta_path, index_path = folder / INDEX_META, folder / INDEX_FILE
        if not index_path.is_file() or not meta_path.is_file():
            raise DataError(
                f"no ANN index at {path}: expected {INDEX_FILE} and {INDEX_META} (write them with "
                f"genrec export RUN --index hnsw)"
            )
        try:
            meta = json.loads(meta_path.read_text())
            params = IndexParams(**meta["params"])
            kind, num_items, dim = str(meta["kind"]), int(meta["num_items"]), int(meta["dim"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{meta_path}: not an index description genrec wrote ({exc})") from None
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise DataError(f"{index_path}: not a readable FAISS index ({str(exc).splitlines()[0]})") from None
        if index.ntotal != num_items or index.d != dim:
            raise DataError(
                f"{index_path} holds {index.ntotal} vectors of dimension {index.d}, {INDEX_META} says "
                f"{num_items} of dimension {dim}: the files do not belong together"
            )
        loaded = cls(index, kind, num_items, dim, params)
        loaded.configure()
        return loaded

    def search(self, users: np.ndarray, k: int, banned: list[set[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best items for each user vector, leaving out each row's banned item indices.

        users: [B, D] float32. Returns ([B, k] int64 item indices, 0 where fewer than k were found;
        [B, k] float32 inner products, -inf there).
        """
        B = len(users)
        banned = banned or [set() for _ in range(B)]
        users = np.ascontiguousarray(users, dtype=np.float32)
        items = np.zeros((B, k), dtype=np.int64)
        scores = np.full((B, k), -np.inf, dtype=np.float32)
        pending = np.arange(B)
        fetch = k + max((len(b) for b in banned), default=0)
        while len(pending):
            fetch = min(fetch, self.num_items)
            values, labels = self.index.search(users[pending], fetch)  # labels -1 = not found
            short = []
            for row, found, value in zip(pending, labels, values):
                keep = [
                    (int(label) + 1, float(v))
                    for label, v in zip(found, value)
                    if label >= 0 and int(label) + 1 not in banned[row]
                ][:k]
                if len(keep) < k and fetch < self.num_items:
                    short.append(row)
                    continue
                items[row, : len(keep)] = [i for i, _ in keep]
                scores[row, : len(keep)] = [v for _, v in keep]
            pending, fetch = np.asarray(short, dtype=np.int64), fetch * 2
        return items, scores
