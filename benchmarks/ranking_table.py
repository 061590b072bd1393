"""The ranking-stage table of BENCHMARKS.md from finished runs: mean ± standard error over seeds.

Heads: each ranker run's test metrics (metrics.json "ranking"/"test") and training seconds per epoch.
Two stages: lines "SEED RANKER_RUN TASK JSON" written by `genrec rank ... --json` (see BENCHMARKS.md);
the difference to retrieval alone is paired by seed.

    python benchmarks/ranking_table.py --runs runs/rank --recipes hstu-rank-late hstu-rank-early \
        sasrec-rank-late rank-mlp --seeds 0 1 2 --two-stage runs/rank/twostage.txt
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

HEAD_KEYS = ("like/auc", "like/gauc", "like/log_loss", "rating/rmse", "event/auc", "event/gauc")


def mean_se(values: list[float]) -> str:
    """ "mean ± standard error" (the standard deviation over sqrt(n), n - 1 in the deviation)."""
    v = np.asarray(values, dtype=np.float64)
    se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return f"{v.mean():.4f} ± {se:.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def seconds_per_epoch(run: Path) -> float:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float(np.mean([r["seconds"] for r in records if r.get("split") == "train" and "seconds" in r]))


def heads_table(runs: Path, recipes: list[str], seeds: list[int]) -> None:
    print("| ranker | " + " | ".join(HEAD_KEYS) + " | best epochs | train s / epoch |")
    print("|---|" + "---|" * (len(HEAD_KEYS) + 2))
    for recipe in recipes:
        metrics = [json.loads((runs / f"{recipe}-s{s}" / "metrics.json").read_text()) for s in seeds]
        cells = [mean_se([m["ranking"]["test"][key] for m in metrics]) for key in HEAD_KEYS]
        epochs = ", ".join(str(m["best_epoch"]) for m in metrics)
        seconds = np.mean([seconds_per_epoch(runs / f"{recipe}-s{s}") for s in seeds])
        print(f"| {recipe} | " + " | ".join(cells) + f" | {epochs} | {seconds:.0f} |")


def two_stage_table(path: Path) -> None:
    groups: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for line in path.read_text().splitlines():
        seed, run, task, payload = line.split(" ", 3)
        groups[(Path(run).name.rsplit("-s", 1)[0], task)][int(seed)] = json.loads(payload)
    print(
        "| ranker | --task | seeds | retrieval HR@10 | retrieval NDCG@10 | two-stage HR@10 | two-stage NDCG@10 | "
        "NDCG@10 gain (paired) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (ranker, task), by_seed in groups.items():
        seeds = sorted(by_seed)
        r = [by_seed[s]["retrieval"] for s in seeds]
        t = [by_seed[s]["two-stage"] for s in seeds]
        gain = [b["ndcg@10"] - a["ndcg@10"] for a, b in zip(r, t)]
        print(
            f"| {ranker} | `{task}` | {','.join(map(str, seeds))} | {mean_se([x['hr@10'] for x in r])} | "
            f"{mean_se([x['ndcg@10'] for x in r])} | {mean_se([x['hr@10'] for x in t])} | "
            f"{mean_se([x['ndcg@10'] for x in t])} | {mean_se(gain)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="folder of the runs RECIPE-sSEED")
    parser.add_argument("--recipes", nargs="+", default=[])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--two-stage", type=Path, help="the genrec rank lines (SEED RANKER_RUN TASK JSON)")
    args = parser.parse_args()
    if args.recipes:
        heads_table(args.runs, args.recipes, args.seeds)
    if args.two_stage:
        print()
        two_stage_table(args.two_stage)


if __name__ == "__main__":
    main()
