"""ANN indexes against exact search: recall@10/@100, queries/s, build time and memory.

    python benchmarks/ann_index.py --run RUN_DIR              # a trained run's catalogue, its users as queries
    python benchmarks/ann_index.py --synthetic 1000000        # N clustered unit vectors (dim 50), 1000 queries

Recall@K is the share of exact search's top K (inner product, `IndexFlatIP`) that the index returns.
Queries/s is measured twice: one query per call (a lone request) and 64 per call (the service's
batches). Every index kind is built through `genrec.serve.index.ItemIndex`, with the parameters in
each row; the first row of each kind is genrec's default.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from genrec.serve.index import IndexParams, ItemIndex


def run_vectors(run_dir: str, queries: int) -> tuple[np.ndarray, np.ndarray]:
    from genrec.serve import Recommender

    rec = Recommender.from_run(run_dir)
    items = rec.scorer.item_table[1:].float().numpy()
    users = np.arange(1, min(queries, rec.dataset.num_users) + 1)
    cases = rec.user_cases(users, 10)
    batch = rec._batch(cases, np.arange(len(users)))
    return items, rec.scorer.user_vectors(batch).float().numpy()


def synthetic_vectors(
    n: int, queries: int, dim: int = 50, clusters: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around `clusters` random centres (catalogues have structure; uniform noise has none)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    items = centres[rng.integers(clusters, size=n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    users = items[rng.integers(n, size=queries)] + 0.5 * rng.standard_normal((queries, dim)).astype(np.float32)
    users /= np.linalg.norm(users, axis=1, keepdims=True)
    return items, users.astype(np.float32)


def queries_per_second(index: ItemIndex, users: np.ndarray, batch: int, k: int = 10, budget: float = 5.0) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < budget and done < len(users):
        index.index.search(users[done : done + batch], k)
        done += batch
    return min(done, len(users)) / (time.perf_counter() - started)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run")
    parser.add_argument("--synthetic", type=int)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    items, users = run_vectors(args.run, args.queries) if args.run else synthetic_vectors(args.synthetic, args.queries)
    label = args.run or f"synthetic {len(items):,} items"
    print(
        f"{label}: {len(items):,} items, dim {items.shape[1]}, {len(users)} queries, faiss {faiss.__version__}, "
        f"{faiss.omp_get_max_threads()} threads"
    )
    variants = [
        ("exact", IndexParams()),
        ("hnsw", IndexParams()),
        ("hnsw", IndexParams(hnsw_ef_search=64)),
        ("hnsw", IndexParams(hnsw_ef_search=256)),
        ("ivf", IndexParams()),
        ("ivf", IndexParams(ivf_nprobe=8)),
        ("ivf", IndexParams(ivf_nprobe=16)),
        ("ivf", IndexParams(ivf_nprobe=64)),
    ]
    truth10 = truth100 = None
    print(
        "| index | parameters | build s | memory MiB | recall@10 | recall@100 | queries/s (1 per call) | queries/s (64 per call) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    built: dict[tuple, ItemIndex] = {}
    for kind, params in variants:
        key = (kind, params.hnsw_m, params.hnsw_ef_construction, params.ivf_nlist)
        started = time.perf_counter()
        if key in built:
            index = built[key]
            index.params = params
            index.configure()
            build = float("nan")
        else:
            index = built[key] = ItemIndex.build(items, kind, params)
            build = time.perf_counter() - started
        _, found100 = index.index.search(users, 100)
        if kind == "exact":
            truth100 = found100
            truth10 = found100[:, :10]
        memory = len(faiss.serialize_index(index.index)) / 2**20
        detail = {
            "exact": "-",
            "hnsw": f"M {params.hnsw_m}, efC {params.hnsw_ef_construction}, efSearch {params.hnsw_ef_search}",
            "ivf": f"nlist {params.nlist(len(items))}, nprobe {params.ivf_nprobe}",
        }[kind]
        print(
            f"| {kind} | {detail} | {build:.1f} | {memory:.0f} | {recall(found100[:, :10], truth10):.3f} | "
            f"{recall(found100, truth100):.3f} | {queries_per_second(index, users, 1):,.0f} | "
            f"{queries_per_second(index, users, 64):,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
