"""Batch recommendation at scale: every user of a synthetic 1M-user, 100k-item dataset, beside the evaluator.

    python benchmarks/recommend_synthetic.py [--users 1000000] [--items 100000] [--k 100] [--work /tmp/genrec-synth]

It writes a synthetic events table (history lengths lognormal, clipped to 3..200, median ~15; items
from a skewed popularity; increasing timestamps), prepares it with `genrec data prepare parquet`,
and saves a random-weight SASRec (dim 64, max_len 50) as a run directory: the scoring cost of a
trained model is the same. Then, in this order, it times the evaluator on every user's
leave-one-out test case and `recommend_to_parquet` (`genrec recommend --users all`) on every user's
whole history, and prints users/s and the process's peak RSS after each (the evaluator's is the
baseline: recommending must not hold all scores, so its peak may not grow with the users).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from genrec.checkpoints import BEST_CHECKPOINT, save_checkpoint
from genrec.config import load_config
from genrec.data import prepare_dataset
from genrec.data.dataset import Dataset
from genrec.eval.evaluator import evaluate
from genrec.run_dir import RunDir
from genrec.runner import build_model, record_dataset, split_for
from genrec.serve import Recommender
from genrec.serve.batch import recommend_to_parquet


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def events(users: int, items: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(2.7, 0.8, size=users).astype(np.int64), 3, 200)
    popularity = rng.lognormal(0, 1.5, size=items)
    popularity /= popularity.sum()
    total = int(lengths.sum())
    user = np.repeat(np.arange(users), lengths)
    item = rng.choice(items, size=total, p=popularity)
    start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    time_ = 1_000_000 + (np.arange(total) - start) * 60
    return pa.table({"user_id": user, "item_id": item, "timestamp": time_})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--work", default="/tmp/genrec-synth")
    args = parser.parse_args()
    work = Path(args.work) / f"{args.users}x{args.items}"
    work.mkdir(parents=True, exist_ok=True)
    data = work / "dataset"
    if not (data / "manifest.json").is_file():
        started = time.perf_counter()
        pq.write_table(events(args.users, args.items), work / "events.parquet")
        prepare_dataset("parquet", data, raw=work / "events.parquet", overwrite=True)
        print(f"prepared in {time.perf_counter() - started:.0f} s")
    dataset = Dataset.load(data)
    config = load_config(
        None, [f"data.path={data}", "model.name=sasrec", "model.dim=64", "model.max_len=50", "train.device=cpu"]
    )
    run_dir = work / "run"
    if not (run_dir / BEST_CHECKPOINT).is_file():
        run = RunDir.create(run_dir, config, overwrite=True)
        record_dataset(run, dataset)
        save_checkpoint(run_dir / BEST_CHECKPOINT, {"model": build_model(dataset, config, progress=False).state_dict()})
    rec = Recommender.from_run(run_dir)
    print(
        f"{dataset.num_users:,} users, {dataset.num_items:,} items, {dataset.num_interactions:,} events; "
        f"{torch.get_num_threads()} torch threads; peak RSS after loading {peak_mib():.0f} MiB"
    )
    split = split_for(dataset, config)
    cases = split.cases("test")
    started = time.perf_counter()
    evaluate(rec.scorer, split.sequences, cases, rec.num_items, progress=False)
    evaluator = len(cases) / (time.perf_counter() - started)
    after_eval = peak_mib()
    started = time.perf_counter()
    summary = recommend_to_parquet(rec, work / "recs.parquet", k=args.k, overwrite=True, progress=False)
    batch = summary.requests / (time.perf_counter() - started)
    print(
        "| users | items | model | evaluator users/s | peak RSS after | recommend users/s (top %d, Parquet) | "
        "peak RSS after | rows written |" % args.k
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {dataset.num_users:,} | {dataset.num_items:,} | SASRec dim 64, max_len 50 (random weights) | "
        f"{evaluator:,.0f} | {after_eval:,.0f} MiB | {batch:,.0f} | {peak_mib():,.0f} MiB | {summary.rows:,} |"
    )


if __name__ == "__main__":
    main()
