"""Ranking throughput: candidates scored per second by an early-fusion ranker, a late-fusion ranker
run live (backbone + MLP), and the same late-fusion ranker from its stored tables (MLP only, the HLLM
deployment), plus each run's training seconds per epoch (from its metrics.jsonl).

Each of the first --users users (dataset order) gets --candidates items; the early and live late
rankers read the user's whole history (their latest max_len events). Timings are the best of
--repeats passes over all users, `torch.set_num_threads(--threads)`.

    python benchmarks/ranking_throughput.py --early runs/rank-early --late runs/rank-late \
        --candidates 200 --users 256 --threads 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from genrec.eval.evaluator import EvalBatch, padded_histories
from genrec.models.ranking import Impressions, Ranker
from genrec.ranking_run import load_ranker
from genrec.run_dir import RunDir
from genrec.runner import dataset_of_run
from genrec.serve.stored_ranking import StoredLateFusion, export_ranker_tables


def seconds_per_epoch(run_dir: Path) -> float:
    """The mean training seconds per epoch the run logged."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds = [r["seconds"] for r in records if r.get("split") == "train" and "seconds" in r]
    return float(np.mean(seconds)) if seconds else float("nan")


def best_of(repeats: int, work) -> float:  # noqa: ANN001
    """The fastest of `repeats` timed calls of `work()`, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def requests(run_dir: Path, users: int, candidates: int, seed: int) -> tuple[Ranker, EvalBatch, torch.Tensor]:
    """The run's ranker, the first `users` users' whole histories, and [users, candidates] random items."""
    config = RunDir.open(run_dir).config()
    dataset = dataset_of_run(RunDir.open(run_dir), config, download=False)
    ranker = load_ranker(dataset, config, run_dir)
    rows = np.arange(1, min(users, dataset.num_users) + 1)
    sequences = dataset.sequences
    items, times, lengths = padded_histories(sequences, sequences.offsets[rows], sequences.offsets[rows + 1])
    last = times[np.arange(len(rows)), lengths - 1]
    batch = EvalBatch(*(torch.from_numpy(a) for a in (rows.astype(np.int64), items, times, lengths, last)))
    generator = torch.Generator().manual_seed(seed)
    return ranker, batch, torch.randint(1, dataset.num_items + 1, (len(rows), candidates), generator=generator)


def live(ranker: Ranker, batch: EvalBatch, candidates: torch.Tensor, chunk: int) -> None:
    with torch.no_grad():
        for begin in range(0, len(candidates), chunk):
            rows = torch.arange(begin, min(begin + chunk, len(candidates)))
            ranker(Impressions.of(batch, candidates[rows], ranker.device, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--early", type=Path, required=True, help="an early-fusion ranker run")
    parser.add_argument("--late", type=Path, required=True, help="a late-fusion ranker run")
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=16, help="users per forward pass of the live rankers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, run in (("early fusion (live)", args.early), ("late fusion (live)", args.late)):
        ranker, batch, candidates = requests(run, args.users, args.candidates, seed=0)
        seconds = best_of(args.repeats, lambda r=ranker, b=batch, c=candidates: live(r, b, c, args.chunk))
        rows.append((name, candidates.numel() / seconds, seconds_per_epoch(run)))
    with tempfile.TemporaryDirectory() as tmp:
        stored = StoredLateFusion.load(export_ranker_tables(args.late, Path(tmp) / "tables"))
        users = batch.users
        seconds = best_of(args.repeats, lambda: stored(users, candidates))
        rows.append(("late fusion (stored tables, MLP only)", candidates.numel() / seconds, float("nan")))
    print(f"{args.users} users x {args.candidates} candidates, {args.threads} thread(s)")
    print("| ranker | candidates / s | training s / epoch |")
    print("|---|---|---|")
    for name, rate, epoch in rows:
        print(f"| {name} | {rate:,.0f} | {'-' if np.isnan(epoch) else f'{epoch:.1f}'} |")
    print(json.dumps({name: {"candidates_per_s": rate, "train_s_per_epoch": epoch} for name, rate, epoch in rows}))


if __name__ == "__main__":
    main()
