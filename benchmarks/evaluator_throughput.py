"""Throughput of `genrec.eval.evaluate` (full ranking, history masking on), in users per second.

Run (full size, from the repository root, in the project's virtualenv):

    python benchmarks/evaluator_throughput.py

Smoke run (seconds):

    python benchmarks/evaluator_throughput.py --users 500,300 --repeats 1 --min-seconds 0

For each catalogue size (default 3,706 items = ML-1M with 6,040 users, and 100,000 items with
20,000 users) it builds synthetic `Sequences` (history lengths lognormal, clipped to 20..500, mean
~150; items drawn from a skewed lognormal popularity; timestamps increasing), takes the
leave-one-out test cases (`genrec.data.splits.leave_one_out`), and evaluates two scorers:

* popularity: `genrec.models.popularity.Popularity` fitted on the training split;
* dot: a random user vector [B, 64] (a lookup in a random [M+1, 64] table) times a random item
  table [N+1, 64], the cost of scoring with a real embedding model.

Each (catalogue, scorer) pair runs in a fresh child process (so its peak RSS is its own): it builds
the data, warms up with one `evaluate` call on the first two batches, then times at least
`--repeats` full `evaluate` calls, and more until they add up to `--min-seconds`. It reports
users/s (median and best of the timed calls), the batch size (`auto_batch_size` of
genrec.eval.evaluator unless --batch-size), the share of the time spent inside the scorer, the RSS
after building the data and the peak RSS of the child, and the time of a fixed reference workload
just before and after the timed calls (if it is much above its usual value, something else was
using the CPU and the figures are not representative). torch uses its default number of threads
unless --threads. genrec is imported from the checkout this file sits in (`benchmarks/..`).

The results are printed as a table and, on the last line, as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# genrec is imported from this checkout (the benchmark measures the code next to it), also when it
# is not installed in the environment
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def synthetic_sequences(
    num_users: int, num_items: int, min_len: int, max_len: int, median_len: float, sigma: float, seed: int
):
    from genrec.data.dataset import Sequences

    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(np.log(median_len), sigma, num_users)), min_len, max_len).astype(np.int64)
    total = int(lengths.sum())
    weights = rng.lognormal(0.0, 1.5, num_items)
    cdf = np.cumsum(weights / weights.sum())
    items = np.minimum(np.searchsorted(cdf, rng.random(total)), num_items - 1) + 1  # 1..N
    users = np.repeat(np.arange(1, num_users + 1, dtype=np.int64), lengths)
    starts = rng.integers(1_000_000_000, 1_400_000_000, num_users)
    gaps = rng.exponential(3600.0, total).astype(np.int64)  # some gaps are 0: ties
    first = np.zeros(total, dtype=bool)
    first[np.concatenate([[0], np.cumsum(lengths)[:-1]])] = True
    cum = np.cumsum(gaps)
    base = np.repeat(cum[first] - gaps[first], lengths)  # reset the running sum at each user
    timestamps = np.repeat(starts, lengths) + cum - base
    return Sequences.from_users(users, items, timestamps, num_users), lengths


def reference_ms() -> float:
    """Milliseconds of a fixed CPU workload (sort 5M int64 + a 1024^3 float32 matmul), median of 5:
    compare it across runs to see whether the machine was busy with something else."""
    import torch

    x = np.random.default_rng(0).integers(0, 1 << 40, 5_000_000)
    a = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(5):
        started = time.perf_counter()
        np.sort(x)
        a @ a
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


class DotProduct:
    """Scores = user vector . item vector, with random [M+1, dim] and [N+1, dim] tables."""

    def __init__(self, num_users: int, num_items: int, dim: int, seed: int) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.user_table = torch.randn(num_users + 1, dim, generator=g)
        self.item_table = torch.randn(num_items + 1, dim, generator=g)

    def __call__(self, batch):
        return self.user_table[batch.users] @ self.item_table.T  # [B, dim] x [dim, N+1]


class Timed:
    """Wraps a scorer and adds up the seconds spent in it."""

    def __init__(self, scorer) -> None:
        self.scorer = scorer
        self.seconds = 0.0

    def __call__(self, batch):
        started = time.perf_counter()
        scores = self.scorer(batch)
        self.seconds += time.perf_counter() - started
        return scores


def worker(cfg: dict) -> dict:
    import torch

    import genrec
    from genrec.data.splits import EvalCases, leave_one_out
    from genrec.eval.evaluator import auto_batch_size, evaluate
    from genrec.models.popularity import Popularity

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    rss_start = _rss_mb()
    setup_started = time.perf_counter()
    n_items, n_users = cfg["items"], cfg["users"]
    sequences, lengths = synthetic_sequences(
        n_users, n_items, cfg["min_len"], cfg["max_len"], cfg["median_len"], cfg["sigma"], cfg["seed"]
    )
    split = leave_one_out(sequences)
    cases = split.test
    if cfg["scorer"] == "popularity":
        scorer = Timed(Popularity(n_items).fit(split.train))
    else:
        scorer = Timed(DotProduct(n_users, n_items, cfg["dim"], cfg["seed"]))
    batch_size = cfg["batch_size"] or auto_batch_size(n_items)
    setup_seconds = time.perf_counter() - setup_started
    rss_setup = _rss_mb()

    def run(c: EvalCases) -> tuple[float, dict]:
        started = time.perf_counter()
        metrics = evaluate(
            scorer, sequences, c, n_items, batch_size=cfg["batch_size"], mask_history=True, progress=False
        )
        return time.perf_counter() - started, metrics

    warm = min(len(cases), 2 * batch_size)
    head = EvalCases(
        cases.users[:warm],
        cases.targets[:warm],
        cases.history_start[:warm],
        cases.history_end[:warm],
        cases.target_timestamps[:warm],
    )
    run(head)
    reference_before = reference_ms()
    seconds, scorer_seconds = [], []
    metrics: dict = {}
    while len(seconds) < cfg["repeats"] or sum(seconds) < cfg["min_seconds"]:
        scorer.seconds = 0.0
        t, metrics = run(cases)
        seconds.append(t)
        scorer_seconds.append(scorer.seconds)
    reference_after = reference_ms()
    history = cases.history_end - cases.history_start
    return {
        "items": n_items,
        "users": n_users,
        "scorer": cfg["scorer"],
        "cases": len(cases),
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "mean_sequence_length": float(lengths.mean()),
        "mean_history_length": float(history.mean()),
        "max_history_length": int(history.max()),
        "setup_seconds": setup_seconds,
        "seconds": seconds,
        "users_per_s_median": len(cases) / statistics.median(seconds),
        "users_per_s_best": len(cases) / min(seconds),
        "scorer_share": statistics.median(s / t for s, t in zip(scorer_seconds, seconds)),
        "rss_start_mb": rss_start,
        "rss_after_setup_mb": rss_setup,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "hr@10": metrics.get("hr@10"),
        "num_users_evaluated": metrics.get("num_users"),
        "genrec_path": os.path.dirname(genrec.__file__),
        "reference_ms_before": reference_before,
        "reference_ms_after": reference_after,
    }


def run_child(cfg: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"worker failed (exit code {proc.returncode}) for {cfg}")
    return json.loads(out.decode().strip().splitlines()[-1])


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def genrec_revision() -> str:
    """The checkout's commit (short), "+dirty" when genrec/ has uncommitted changes; else a REVISION file."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no", "--", "genrec"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout, e.g. a `git archive` copy
        marker = REPO_ROOT / "REVISION"
        return marker.read_text().strip() if marker.is_file() else "unknown"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows the default of a flag unless it is None / False (those flags explain their default)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_HelpFormatter)
    parser.add_argument(
        "--items", type=_ints, default=[3706, 100_000], help="comma-separated catalogue sizes (number of items N)"
    )
    parser.add_argument(
        "--users", type=_ints, default=[6040, 20_000], help="comma-separated number of users, one per catalogue size"
    )
    parser.add_argument("--scorers", default="popularity,dot", help="comma-separated: popularity, dot")
    parser.add_argument("--dim", type=int, default=64, help="embedding size of the dot scorer")
    parser.add_argument(
        "--repeats", type=int, default=3, help="at least this many timed evaluate() calls per configuration"
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=3.0,
        help="repeat the timed calls until they add up to at least this long (small catalogues)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (default: evaluate's auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--min-len", type=int, default=20, help="shortest user sequence")
    parser.add_argument("--max-len", type=int, default=500, help="longest user sequence")
    parser.add_argument("--median-len", type=float, default=120.0, help="median of the lognormal sequence length")
    parser.add_argument("--sigma", type=float, default=0.75, help="sigma of the lognormal sequence length")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every configuration in this process (peak RSS then is the maximum so far)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if len(args.items) != len(args.users):
        parser.error("--items and --users need the same number of values")
    scorers = [s for s in args.scorers.split(",") if s]
    for s in scorers:
        if s not in ("popularity", "dot"):
            parser.error(f"unknown scorer {s!r} (popularity, dot)")

    results = []
    for n_items, n_users in zip(args.items, args.users):
        for scorer in scorers:
            cfg = {
                "items": n_items,
                "users": n_users,
                "scorer": scorer,
                "dim": args.dim,
                "repeats": args.repeats,
                "min_seconds": args.min_seconds,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "min_len": args.min_len,
                "max_len": args.max_len,
                "median_len": args.median_len,
                "sigma": args.sigma,
                "seed": args.seed,
            }
            print(f"running: {n_items:,} items, {n_users:,} users, {scorer} ...", file=sys.stderr, flush=True)
            r = worker(cfg) if args.in_process else run_child(cfg)
            print(f"  {r['users_per_s_median']:,.0f} users/s", file=sys.stderr, flush=True)
            results.append(r)

    import torch

    print(
        f"\ngenrec.eval.evaluate: full ranking, history masking on, leave-one-out test cases [genrec {genrec_revision()}]"
    )
    header = (
        f"{'items':>8} {'users':>7} {'scorer':<10} {'batch':>5} {'users/s (median)':>16} {'best':>8} "
        f"{'s/run':>6} {'in scorer':>9} {'RSS data':>9} {'peak RSS':>9} {'ref ms':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['items']:>8,} {r['cases']:>7,} {r['scorer']:<10} {r['batch_size']:>5} "
            f"{r['users_per_s_median']:>16,.0f} {r['users_per_s_best']:>8,.0f} {statistics.median(r['seconds']):>6.2f} "
            f"{r['scorer_share']:>9.0%} {r['rss_after_setup_mb']:>6,.0f} MB {r['peak_rss_mb']:>6,.0f} MB "
            f"{r['reference_ms_before']:>5.0f}/{r['reference_ms_after']:<5.0f}"
        )
    mean_hist = statistics.mean(r["mean_history_length"] for r in results)
    runs = ", ".join(str(len(r["seconds"])) for r in results)
    print(
        f"(mean history length {mean_hist:.0f}; {results[0]['torch_threads']} torch threads; "
        f"timed runs per row after one warm-up: {runs}; ref ms = a fixed reference workload before/after the "
        f"timed runs, which rises when something else uses the CPU)"
    )
    print(
        json.dumps(
            {
                "benchmark": "evaluator_throughput",
                "python": platform.python_version(),
                "torch": torch.__version__,
                "cpu_count": os.cpu_count(),
                "genrec_revision": genrec_revision(),
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
