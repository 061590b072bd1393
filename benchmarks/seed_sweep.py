"""Train recipes under several seeds and report test (and validation) metrics as mean and standard error.

    python benchmarks/seed_sweep.py ml-1m/hstu ml-1m/sasrec --seeds 0 1 2 \
        --set data.raw=../shared/data/ml-1m-sample --out runs/seed-sweep [--threads 1]

Each (recipe, seed) is one `genrec train RECIPE --set seed=S ... --json` in a child process, writing
its run directory under --out/<recipe>/seed-<S>; a run directory that already holds metrics.json
is read, not retrained, so an interrupted sweep continues where it stopped. On small datasets
one seed is not enough to rank two models (600 users: one hit moves HR@10 by 0.0017), hence this.
Prints one Markdown table; --json writes every run's metrics too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

METRICS = ["hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr"]


def train(recipe: str, seed: int, sets: list[str], out: Path, threads: int | None) -> dict:
    run_dir = out / recipe.replace("/", "__") / f"seed-{seed}"
    done = run_dir / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [
        sys.executable,
        "-m",
        "genrec",
        "train",
        recipe,
        "--set",
        f"seed={seed}",
        *[a for s in sets for a in ("--set", s)],
        "--out",
        str(run_dir),
        "--overwrite",
        "--json",
        *(["--threads", str(threads)] if threads else []),
    ]
    print("$", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(done.read_text())


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return statistics.fmean(values), stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", help="configs, by path or by name (ml-1m/hstu)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], help="override for every run")
    parser.add_argument("--out", type=Path, default=Path("runs/seed-sweep"))
    parser.add_argument("--threads", type=int, help="OMP/MKL threads per run")
    parser.add_argument("--json", type=Path, help="write every run's metrics here")
    args = parser.parse_args()

    runs = {recipe: [train(recipe, s, args.set, args.out, args.threads) for s in args.seeds] for recipe in args.recipes}
    print(
        f"seeds {args.seeds}; overrides {args.set or 'none'}; mean ± standard error over seeds; "
        f"validation NDCG@10 in brackets\n"
    )
    print("| recipe | " + " | ".join(METRICS) + " | best epoch (per seed) |")
    print("|---|" + "---|" * (len(METRICS) + 1))
    for recipe, results in runs.items():
        cells = []
        for metric in METRICS:
            mean, err = mean_and_stderr([r["test"][metric] for r in results])
            cells.append(f"{mean:.4f} ± {err:.4f}")
        valid, _ = mean_and_stderr([r["valid"]["ndcg@10"] for r in results])
        cells[1] += f" ({valid:.4f})"
        epochs = ", ".join(str(r.get("best_epoch", "?")) for r in results)
        print(f"| {recipe} | " + " | ".join(cells) + f" | {epochs} |")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
