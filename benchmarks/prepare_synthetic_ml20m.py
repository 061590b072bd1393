"""Benchmark `genrec data prepare ml-20m` on a synthetic release of ML-20M size.

Run (full size, from the repository root, in the project's virtualenv):

    python benchmarks/prepare_synthetic_ml20m.py

Smoke run (a small release, a few seconds):

    python benchmarks/prepare_synthetic_ml20m.py --rows 200000 \
        --work-dir /tmp/genrec-bench/ml-20m-synthetic-smoke --out /tmp/genrec-bench/ml-20m-smoke-prepared

Step 1 writes a release folder in the ML-20M layout (`ratings.csv` with the header
`userId,movieId,rating,timestamp`, `movies.csv` with `movieId,title,genres`), by default 20,000,000
ratings by 138,493 users of 27,278 movies, with the shape of the real release: every user has at
least 20 ratings and activity is lognormal (median ~68, mean ~144, capped at a third of the
catalogue); item popularity is lognormal with the largest share capped at ~0.34% of the ratings
(as ML-20M's most rated movie) and a long tail; a user rates a movie at most once; rows are sorted
by user then movieId (as in ML-20M), so the timestamps inside a user are out of order; timestamps
are unix seconds in 1995..2015 with some exact ties within a user (~4.5%); ratings are 0.5..5.0 in
steps of 0.5 with ML-20M's mix. Movie ids are sparse (1..131262), titles like "Movie 123 (1999)"
(5% "Movie 123, The (1999)", which needs CSV quoting), genres from the ML-20M list joined by "|".
The folder is reused when `<work-dir>.json` records the same generation parameters.

Step 2 runs `python -m genrec data prepare ml-20m --raw WORK_DIR --out OUT --overwrite` as a
child process and measures its wall time and peak RSS (`ru_maxrss` of that child, from
`os.wait4`). The child's log lines are time-stamped as they arrive, and its RSS is sampled from
/proc, which splits the run into phases (start-up, reading the CSVs, building + writing, exit).
Then it prints the counts from `genrec data info OUT --json`.

Around each run the parent times a fixed reference workload ("reference ms"): when it is well above
its usual value, something else was using the CPU and the timing is not representative.

Target (issue): under 60 s and under 4 GB peak RSS on 2 cores. The CSV files are in the page cache
right after generation (warm cache); pass --repeats 2 or more to see the spread.

The results are printed as a table and, on the last line, as one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ML20M_ROWS = 20_000_000
ML20M_USERS = 138_493
ML20M_ITEMS = 27_278
ML20M_MAX_MOVIE_ID = 131_262
MIN_PER_USER = 20
T_FIRST = 789_652_009  # 1995-01-09, the first ML-20M timestamp
T_LAST = 1_427_784_002  # 2015-03-31, the last one
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# approximate share of each half-star value in ML-20M
RATING_VALUES = ("0.5", "1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0", "4.5", "5.0")
RATING_PROBS = np.array([1.2, 3.4, 1.4, 7.2, 4.4, 21.4, 10.5, 27.7, 7.7, 14.5])
RATING_PROBS = RATING_PROBS / RATING_PROBS.sum()
GENERATOR_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]  # the child runs the genrec of this checkout


# ----------------------------------------------------------------------------------------------
# generation
# ----------------------------------------------------------------------------------------------


def user_counts(rng: np.random.Generator, rows: int, users: int, cap: int, sigma: float) -> np.ndarray:
    """Ratings per user: MIN_PER_USER + a lognormal share of the rest, capped, summing to `rows`."""
    extra_total = rows - MIN_PER_USER * users
    cap_extra = cap - MIN_PER_USER
    if extra_total < 0 or extra_total > cap_extra * users:
        raise SystemExit(f"--rows {rows} cannot be split over {users} users with {MIN_PER_USER}..{cap} ratings each")
    w = rng.lognormal(0.0, sigma, users)
    lo, hi = 0.0, extra_total / w.min() + 1.0  # scale s: sum(min(floor(w*s), cap)) grows with s
    for _ in range(200):
        s = (lo + hi) / 2
        if np.minimum(np.floor(w * s), cap_extra).sum() <= extra_total:
            lo = s
        else:
            hi = s
    extra = np.minimum(np.floor(w * lo), cap_extra).astype(np.int64)
    remainder = extra_total - int(extra.sum())
    room = np.flatnonzero(extra < cap_extra)
    extra[rng.choice(room, size=remainder, replace=False)] += 1
    counts = extra + MIN_PER_USER
    assert counts.sum() == rows and counts.min() >= MIN_PER_USER and counts.max() <= cap
    return counts


def item_popularity(rng: np.random.Generator, items: int, sigma: float, top_share: float) -> np.ndarray:
    """Cumulative sampling probabilities over item ranks: lognormal weights, the largest capped."""
    w = rng.lognormal(0.0, sigma, items)
    for _ in range(10):
        w = np.minimum(w, top_share * w.sum())
    return np.cumsum(w / w.sum())


def sample_distinct(rng: np.random.Generator, counts: np.ndarray, cdf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each user i, counts[i] distinct item ranks, popularity-weighted (uniform for the last
    few a heavy user still misses). Returns (owner [n], rank [n]) sorted by owner then rank."""
    num_items = len(cdf)
    owners = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    ranks = np.minimum(np.searchsorted(cdf, rng.random(len(owners))), num_items - 1)
    for round_ in range(100):
        keys = np.sort(owners * num_items + ranks)  # np.sort + a mask: much faster than np.unique here
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
        owners, ranks = keys // num_items, keys % num_items
        deficit = counts - np.bincount(owners, minlength=len(counts))
        if not deficit.any():
            return owners, ranks
        new_owners = np.repeat(np.arange(len(counts), dtype=np.int64), deficit)
        if round_ < 5:
            new_ranks = np.minimum(np.searchsorted(cdf, rng.random(len(new_owners))), num_items - 1)
        else:
            new_ranks = rng.integers(0, num_items, len(new_owners))
        owners, ranks = np.concatenate([owners, new_owners]), np.concatenate([ranks, new_ranks])
    raise RuntimeError("could not draw distinct items per user")


def chunk_timestamps(rng: np.random.Generator, owners: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Unix seconds: each user rates in sessions (5..60 ratings) spread over a lognormal active
    period; inside a session the ratings fall in a window of ~10 s per rating, so some tie."""
    n_users = len(counts)
    start = rng.integers(T_FIRST, T_LAST - 3600, n_users)
    span = np.minimum(rng.lognormal(np.log(60 * 86400), 2.0, n_users), T_LAST - start).astype(np.int64)
    session_size = rng.integers(5, 61, n_users)
    sessions = -(-counts // session_size)  # ceil
    session_offsets = np.concatenate([[0], np.cumsum(sessions)])
    session_owner = np.repeat(np.arange(n_users), sessions)
    session_time = start[session_owner] + (rng.random(len(session_owner)) * span[session_owner]).astype(np.int64)
    session = session_offsets[owners] + (rng.random(len(owners)) * sessions[owners]).astype(np.int64)
    window = 10 * session_size[owners]
    return np.minimum(session_time[session] + (rng.random(len(owners)) * window).astype(np.int64), T_LAST)


def write_movies(path: Path, movie_ids: np.ndarray, rng: np.random.Generator) -> None:
    years = np.clip(np.round(2015 - rng.exponential(18.0, len(movie_ids))), 1902, 2015).astype(int)
    n_genres = rng.choice([0, 1, 2, 3, 4], p=[0.01, 0.35, 0.35, 0.2, 0.09], size=len(movie_ids))
    the = rng.random(len(movie_ids)) < 0.05
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["movieId", "title", "genres"])
        for movie, year, k, has_the in zip(movie_ids.tolist(), years.tolist(), n_genres.tolist(), the.tolist()):
            title = f"Movie {movie}, The ({year})" if has_the else f"Movie {movie} ({year})"
            genres = "|".join(sorted(rng.choice(GENRES, size=k, replace=False))) if k else "(no genres listed)"
            writer.writerow([movie, title, genres])


def generate(work_dir: Path, rows: int, users: int, items: int, seed: int, chunk_users: int) -> dict:
    """Write ratings.csv and movies.csv; returns a description of what was written."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    work_dir.mkdir(parents=True, exist_ok=True)
    cap = max(MIN_PER_USER, items // 3)
    counts = user_counts(rng, rows, users, cap, sigma=1.38)
    cdf = item_popularity(rng, items, sigma=2.5, top_share=0.0034)
    max_movie_id = max(ML20M_MAX_MOVIE_ID, 2 * items)
    movie_ids = np.sort(rng.choice(np.arange(1, max_movie_id + 1), size=items, replace=False)).astype(np.int64)
    rank_to_movie = rng.permutation(movie_ids)  # popularity is unrelated to the id
    write_movies(work_dir / "movies.csv", movie_ids, rng)

    labels = pa.array(RATING_VALUES, pa.string())
    schema = pa.schema(
        [("userId", pa.int32()), ("movieId", pa.int64()), ("rating", pa.string()), ("timestamp", pa.int64())]
    )
    options = pacsv.WriteOptions(include_header=False, quoting_style="none", batch_size=1 << 16)
    tmp = work_dir / "ratings.csv.tmp"
    ties = 0
    with open(tmp, "wb") as raw_file:
        raw_file.write(b"userId,movieId,rating,timestamp\n")
        with pacsv.CSVWriter(raw_file, schema, write_options=options) as writer:
            for first in range(0, users, chunk_users):
                c = counts[first : first + chunk_users]
                owners, ranks = sample_distinct(rng, c, cdf)
                movies = rank_to_movie[ranks]
                order = np.lexsort((movies, owners))  # ML-20M order: user, then movieId
                owners, movies = owners[order], movies[order]
                ts = chunk_timestamps(rng, owners, c)
                pair = np.sort(owners * (T_LAST + 1) + ts)
                ties += int((pair[1:] == pair[:-1]).sum())
                rating_codes = rng.choice(len(RATING_VALUES), size=len(owners), p=RATING_PROBS)
                table = pa.table(
                    {
                        "userId": pa.array((owners + first + 1).astype(np.int32)),
                        "movieId": pa.array(movies),
                        "rating": labels.take(pa.array(rating_codes)),
                        "timestamp": pa.array(ts),
                    },
                    schema=schema,
                )
                writer.write_table(table)
    os.replace(tmp, work_dir / "ratings.csv")
    return {
        "generator_version": GENERATOR_VERSION,
        "rows": rows,
        "users": users,
        "items": items,
        "seed": seed,
        "user_ratings_min": int(counts.min()),
        "user_ratings_median": float(np.median(counts)),
        "user_ratings_mean": float(counts.mean()),
        "user_ratings_max": int(counts.max()),
        "timestamp_ties": ties,
        "ratings_csv_bytes": (work_dir / "ratings.csv").stat().st_size,
        "movies_csv_bytes": (work_dir / "movies.csv").stat().st_size,
        "generation_seconds": round(time.perf_counter() - started, 1),
    }


def ensure_release(
    work_dir: Path, rows: int, users: int, items: int, seed: int, chunk_users: int, force: bool
) -> tuple[dict, bool]:
    """(description, reused): reuse the folder when `<work_dir>.json` records the same parameters."""
    record = work_dir.parent / f"{work_dir.name}.json"
    wanted = {"generator_version": GENERATOR_VERSION, "rows": rows, "users": users, "items": items, "seed": seed}
    if not force and record.is_file():
        info = json.loads(record.read_text())
        same = all(info.get(k) == v for k, v in wanted.items())
        files_ok = all((work_dir / f).is_file() for f in ("ratings.csv", "movies.csv")) and (
            (work_dir / "ratings.csv").stat().st_size == info.get("ratings_csv_bytes")
        )
        if same and files_ok:
            return info, True
    record.unlink(missing_ok=True)
    info = generate(work_dir, rows, users, items, seed, chunk_users)
    record.write_text(json.dumps(info, indent=2) + "\n")
    return info, False


# ----------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------


def _proc_status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def run_measured(cmd: list[str], stdout_path: Path, env: dict | None = None, sample_s: float = 0.05) -> dict:
    """Run `cmd`, time-stamping its stderr lines and sampling its RSS; peak RSS from os.wait4."""
    started = time.perf_counter()
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env)
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                rss = _proc_status_kb(proc.pid, "VmRSS")
                if rss is not None:
                    samples.append((time.perf_counter() - started, rss))
                done.wait(sample_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        lines = []
        for raw in proc.stderr:
            lines.append((time.perf_counter() - started, raw.decode("utf-8", "replace").rstrip("\n")))
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stderr.close()
    return {
        "returncode": proc.returncode,
        "wall_s": wall,
        "peak_rss_kb": usage.ru_maxrss,  # KB on Linux
        "user_cpu_s": usage.ru_utime,
        "sys_cpu_s": usage.ru_stime,
        "stderr_lines": lines,
        "rss_samples": samples,
    }


def phases(result: dict) -> list[dict]:
    """Split the run at genrec's INFO lines: start-up, read, build + write + checksums, exit."""
    marks = [(0.0, "start-up (imports, argument parsing)")]
    names = {
        "reading ": "read ratings.csv + movies.csv",
        "read ": "build canonical + write parquet + checksums",
        "wrote ": "load dataset, print summary, exit",
    }
    for t, line in result["stderr_lines"]:
        for prefix, name in names.items():
            if line.startswith(prefix):
                marks.append((t, name))
                break
    marks.append((result["wall_s"], None))
    out = []
    for (t0, name), (t1, _) in zip(marks, marks[1:]):
        if name is None:
            continue
        rss = [kb for t, kb in result["rss_samples"] if t0 <= t <= t1]
        out.append(
            {"phase": name, "seconds": round(t1 - t0, 2), "max_sampled_rss_mb": round(max(rss) / 1024) if rss else None}
        )
    return out


def reference_ms() -> float:
    """Milliseconds of a fixed CPU workload (sort 5M int64 + argsort 2M), median of 5: compare it
    across runs to see whether the machine was busy with something else."""
    x = np.random.default_rng(0).integers(0, 1 << 40, 5_000_000)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        np.sort(x)
        np.argsort(x[:2_000_000], kind="stable")
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def genrec_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "genrec", *args]


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


def child_env() -> dict:
    """The environment of the genrec child: PYTHONPATH starts with this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows the default of a flag unless it is None / False (those flags explain their default)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_HelpFormatter)
    parser.add_argument("--rows", type=int, default=ML20M_ROWS, help="number of ratings to generate")
    parser.add_argument(
        "--users",
        type=int,
        default=None,
        help=f"number of users (default: {ML20M_USERS:,} scaled by rows/{ML20M_ROWS:,})",
    )
    parser.add_argument(
        "--items",
        type=int,
        default=None,
        help=f"number of movies (default: {ML20M_ITEMS:,} scaled by sqrt(rows/{ML20M_ROWS:,}), at least 200)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the generator")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/genrec-bench/ml-20m-synthetic"),
        help="release folder to write (reused if <work-dir>.json records the same parameters)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("/tmp/genrec-bench/ml-20m-prepared"),
        help="output folder of `genrec data prepare` (replaced)",
    )
    parser.add_argument("--regenerate", action="store_true", help="write the release again even if it can be reused")
    parser.add_argument("--chunk-users", type=int, default=20_000, help="users generated and written per chunk")
    parser.add_argument("--repeats", type=int, default=1, help="how many times to run `genrec data prepare`")
    parser.add_argument("--target-seconds", type=float, default=60.0, help="time target of the issue")
    parser.add_argument("--target-gb", type=float, default=4.0, help="peak RSS target of the issue (GB = 10^9 bytes)")
    parser.add_argument("--show-log", action="store_true", help="print the child's stderr lines with their times")
    args = parser.parse_args()

    scale = args.rows / ML20M_ROWS
    users = args.users or max(1, round(ML20M_USERS * scale))
    items = args.items or max(200, round(ML20M_ITEMS * min(1.0, scale) ** 0.5))
    if args.rows == ML20M_ROWS and args.users is None:
        users = ML20M_USERS
    if args.rows == ML20M_ROWS and args.items is None:
        items = ML20M_ITEMS

    print(f"release: {args.work_dir} ({args.rows:,} ratings, {users:,} users, {items:,} movies)", file=sys.stderr)
    gen_started = time.perf_counter()
    info, reused = ensure_release(args.work_dir, args.rows, users, items, args.seed, args.chunk_users, args.regenerate)
    gen_seconds = time.perf_counter() - gen_started
    print(f"release {'reused' if reused else 'generated'} in {gen_seconds:.1f}s", file=sys.stderr)

    cmd = genrec_cmd("data", "prepare", "ml-20m", "--raw", str(args.work_dir), "--out", str(args.out), "--overwrite")
    runs = []
    for i in range(args.repeats):
        print(f"run {i + 1}/{args.repeats}: {' '.join(cmd)}", file=sys.stderr)
        reference_before = reference_ms()
        result = run_measured(cmd, args.out.parent / f"{args.out.name}.prepare-stdout.txt", env=child_env())
        if args.show_log or result["returncode"] != 0:
            for t, line in result["stderr_lines"]:
                print(f"  [{t:7.2f}s] {line}", file=sys.stderr)
        if result["returncode"] != 0:
            print(f"genrec data prepare failed with exit code {result['returncode']}", file=sys.stderr)
            return 1
        result["reference_ms"] = (reference_before, reference_ms())
        runs.append(result)

    info_proc = subprocess.run(
        genrec_cmd("data", "info", str(args.out), "--json"), capture_output=True, text=True, env=child_env()
    )
    if info_proc.returncode != 0:
        print(info_proc.stderr, file=sys.stderr)
        return 1
    summary = json.loads(info_proc.stdout)

    best = min(runs, key=lambda r: r["wall_s"])
    walls = [r["wall_s"] for r in runs]
    peaks_gb = [r["peak_rss_kb"] * 1024 / 1e9 for r in runs]
    run_phases = phases(best)
    record = {
        "benchmark": "prepare_synthetic_ml20m",
        "command": " ".join(cmd),
        "rows": args.rows,
        "raw_users": users,
        "raw_items": items,
        "release_reused": reused,
        "generation_seconds": info.get("generation_seconds"),
        "ratings_csv_mb": round(info["ratings_csv_bytes"] / 1e6, 1),
        "wall_s": [round(w, 2) for w in walls],
        "peak_rss_gb": [round(p, 3) for p in peaks_gb],
        "cpu_s": [round(r["user_cpu_s"] + r["sys_cpu_s"], 1) for r in runs],
        "phases_fastest_run": run_phases,
        "reference_ms_before_after": [[round(a), round(b)] for a, b in (r["reference_ms"] for r in runs)],
        "num_users": summary.get("num_users"),
        "num_items": summary.get("num_items"),
        "num_interactions": summary.get("num_interactions"),
        "target_seconds": args.target_seconds,
        "target_gb": args.target_gb,
        "meets_time_target": max(walls) < args.target_seconds,
        "meets_memory_target": max(peaks_gb) < args.target_gb,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "genrec_revision": genrec_revision(),
    }

    rows = [
        (
            "ratings.csv",
            f"{info['ratings_csv_bytes'] / 1e6:,.0f} MB, {args.rows:,} rows"
            f" ({'reused' if reused else 'generated in %.1fs' % gen_seconds})",
        ),
        ("wall time", ", ".join(f"{w:.1f} s" for w in walls) + f"  (target < {args.target_seconds:.0f} s)"),
        ("peak RSS (child)", ", ".join(f"{p:.2f} GB" for p in peaks_gb) + f"  (target < {args.target_gb:.0f} GB)"),
        ("CPU time (user+sys)", ", ".join(f"{c:.1f} s" for c in record["cpu_s"])),
        ("reference ms before/after", ", ".join(f"{a}/{b}" for a, b in record["reference_ms_before_after"])),
        (
            "users / items / interactions",
            f"{summary.get('num_users'):,} / {summary.get('num_items'):,} / {summary.get('num_interactions'):,}",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"\ngenrec data prepare ml-20m (synthetic)  --  {' '.join(cmd)}  [genrec {record['genrec_revision']}]")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print("\n  phase (fastest run)                              seconds   max sampled RSS")
    for p in run_phases:
        rss = f"{p['max_sampled_rss_mb']:,} MB" if p["max_sampled_rss_mb"] is not None else "-"
        print(f"  {p['phase']:<46}  {p['seconds']:>8.2f}   {rss:>10}")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
