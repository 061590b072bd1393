"""Training speed when several genrec processes share the machine's cores.

    python benchmarks/oversubscription.py [--steps 60] [--recipe ml-100k/sasrec] [--processes 2]

Each setting starts `--processes` copies of `genrec train RECIPE --set train.max_steps=STEPS` at once
(one alone for the baseline) and reads each run's training speed (sequences/s, from metrics.jsonl)
and wall time. Settings: genrec's default (torch's threads on the cores the process may use,
OpenMP's own wait policy, and training that gives cores up while other processes use them,
`genrec.threads.ThreadGovernor`), against a fixed thread count (what genrec did before, and what
`--threads N` does), OpenMP's passive wait (OMP_WAIT_POLICY=PASSIVE: idle threads sleep instead
of spinning) and `--threads` splitting the cores. Prints one
Markdown table. Run it on an otherwise quiet machine: it is itself the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def start(
    recipe: str, steps: int, out: Path, threads: int | None, env_extra: dict[str, str], sets: list[str]
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    command = [
        sys.executable,
        "-m",
        "genrec",
        "train",
        recipe,
        "--set",
        f"train.max_steps={steps}",
        "--set",
        "train.patience=null",
        *[a for s in sets for a in ("--set", s)],
        "--out",
        str(out),
        "--json",
        "--quiet",
    ] + (["--threads", str(threads)] if threads else [])
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def speed(run_dir: Path) -> float:
    """Mean training sequences/s over the run's epochs."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.mean(r["sequences_per_s"] for r in records if r["split"] == "train")


def measure(
    name: str,
    processes: int,
    threads: int | None,
    env_extra: dict[str, str],
    args: argparse.Namespace,
    root: Path,
    stagger: float = 0.0,
) -> dict:
    """Start `processes` trainings, `stagger` seconds apart, and wait for all of them."""
    outs = [root / f"{name}-{i}" for i in range(processes)]
    started = time.perf_counter()
    children = []
    for i, out in enumerate(outs):
        if i and stagger:
            time.sleep(stagger)
        children.append(start(args.recipe, args.steps, out, threads, env_extra, args.set))
    for child in children:
        _, err = child.communicate()
        if child.returncode:
            raise SystemExit(f"{name}: a training failed:\n{err}")
    wall = time.perf_counter() - started
    speeds = [speed(out) for out in outs]
    row = {
        "setting": name,
        "processes": processes,
        "threads": threads or "default",
        "env": env_extra or "",
        "seq_per_s_each": round(statistics.mean(speeds)),
        "seq_per_s_total": round(sum(speeds)),
        "wall_s": round(wall, 1),
    }
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="ml-100k/sasrec")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per training (default 60)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = max(1, cores // args.processes)
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    n = args.processes
    settings = [  # name, processes, --threads, environment, seconds between the starts
        ("alone, genrec's default", 1, None, {}, 0),
        ("alone, passive wait", 1, None, passive, 0),
        (f"shared, fixed {cores} threads each (genrec before)", n, cores, {}, 0),
        ("shared, genrec's default, started together", n, None, {}, 0),
        ("shared, genrec's default, started 5 s apart", n, None, {}, 5),
        (f"shared, fixed {cores} threads, passive wait", n, cores, passive, 0),
        (f"shared, --threads {share}", n, share, {}, 0),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, k, threads, env, args, Path(tmp), stagger) for name, k, threads, env, stagger in settings]
    print(f"\n{cores} cores; {args.recipe}, {args.steps} steps per training\n")
    print("| setting | processes | threads each | training seq/s (each) | seq/s (all) | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['setting']} | {r['processes']} | {r['threads']} | {r['seq_per_s_each']} | {r['seq_per_s_total']} "
            f"| {r['wall_s']} |"
        )


if __name__ == "__main__":
    main()
