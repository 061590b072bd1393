"""Batch recommendation (`genrec recommend`) beside the evaluator, on the same run: users per second.

    python benchmarks/recommend_throughput.py RUN_DIR [--k 100] [--index EXPORT_DIR]

The evaluator scores every user's test case (full ranking, history masked); batch recommendation
scores every user's whole history, masks it, takes the top k and writes them to Parquet. Both use
the same batch size (a 64 MiB score matrix). Peak RSS is the process's after both.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from genrec.eval.evaluator import evaluate
from genrec.runner import split_for
from genrec.serve import Recommender
from genrec.serve.batch import recommend_to_parquet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--index")
    args = parser.parse_args()
    rec = Recommender.from_run(args.run_dir, index=args.index)
    split = split_for(rec.dataset, rec.config)
    cases = split.cases("test")
    started = time.perf_counter()
    evaluate(rec.scorer, split.sequences, cases, rec.num_items, progress=False)
    evaluator = len(cases) / (time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = recommend_to_parquet(rec, Path(tmp) / "recs.parquet", k=args.k, progress=False)
        batch = summary.requests / (time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        "| run | model | items | users | evaluator users/s | recommend users/s (top %d, Parquet) | ratio | peak RSS MiB |"
        % args.k
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {Path(args.run_dir).name}{' + ' + Path(args.index).name if args.index else ''} | {rec.model_name} | "
        f"{rec.num_items:,} | {summary.requests:,} | {evaluator:,.0f} | {batch:,.0f} | {evaluator / batch:.2f} | {peak:.0f} |"
    )


if __name__ == "__main__":
    main()
