"""TIGER beside popularity and SASRec on the same splits, with published and genrec-built SIDs.

Each entry is a shipped recipe plus `--set` overrides, trained with `genrec.runner.run` (the same
code as `genrec train`); one run directory per entry under --out, and results.json beside them
(entries already in it are skipped, so an interrupted benchmark resumes).

TIGER's recipes are the paper's model; on a 2-core CPU they get a budget instead of the paper's
200k steps: `--cpu-budget` (default on) trains 8 epochs of 64 users per batch on MiniOneRec and
200 steps on Beauty.

    GENREC_DATA_DIR=../shared/data python benchmarks/tiger_quality.py --sids runs/sids --out runs/tiger-bench

--sids: the folder `benchmarks/sid_build.py` wrote (`<Dataset>.<method>.index.json`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from genrec.config import load_config
from genrec.runner import format_table, run

CPU_BUDGET = ["train.batch_size=64", "train.lr=0.002", "train.warmup_steps=50"]
MINIONEREC_BUDGET = [*CPU_BUDGET, "train.epochs=8", "train.eval_every=4"]
BEAUTY_BUDGET = [*CPU_BUDGET, "train.max_steps=200", "train.eval_every=1000"]


def entries(sids: Path, cpu_budget: bool) -> dict[str, tuple[str, list[str]]]:
    """label -> (recipe, overrides)."""
    minionerec = MINIONEREC_BUDGET if cpu_budget else []
    beauty = BEAUTY_BUDGET if cpu_budget else []
    out: dict[str, tuple[str, list[str]]] = {}
    for short, name in (("office", "Office_Products"), ("industrial", "Industrial_and_Scientific")):
        out[f"{short} popularity"] = (f"{short}/popularity", [])
        out[f"{short} sasrec"] = (f"{short}/sasrec", [])
        out[f"{short} tiger published-sids"] = (f"{short}/tiger", minionerec)
        for method in ("rqvae", "rqkmeans"):
            sid_file = sids / f"{name}.{method}.index.json"
            out[f"{short} tiger {method}-sids"] = (f"{short}/tiger", [*minionerec, f"model.sid_file={sid_file}"])
    out["beauty tiger letter-sids"] = ("amazon-beauty/tiger", beauty)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sids", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="+", help="labels to run (default: all)")
    parser.add_argument("--no-cpu-budget", dest="cpu_budget", action="store_false")
    args = parser.parse_args()
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for label, (recipe, overrides) in entries(args.sids, args.cpu_budget).items():
        if label in results or (args.only and label not in args.only):
            continue
        config = load_config(recipe, overrides)
        started = time.perf_counter()
        result = run(config, args.out / label.replace(" ", "__"), overwrite=True, progress=False)
        seconds = time.perf_counter() - started
        metrics = json.loads((result.run_dir / "metrics.json").read_text())
        results[label] = {
            "recipe": recipe,
            "overrides": overrides,
            "seconds": seconds,
            **{k: metrics.get(k) for k in ("valid", "test", "best_epoch", "epochs")},
        }
        args.out.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1))
        print(f"{label}: {seconds:.0f} s", flush=True)
    print(
        format_table(
            [(label, r["test"]) for label, r in results.items()], ["hr@5", "ndcg@5", "hr@10", "ndcg@10", "num_users"]
        )
    )


if __name__ == "__main__":
    main()
