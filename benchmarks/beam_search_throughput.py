"""Constrained beam search throughput of a trained TIGER run: users per second at K beams.

Loads the run's best checkpoint and times its scorer (encoder once per user, one cached decoder
step per SID level for all beams, the items of each beam written into the score row) on the first
--users test cases, for each --beams and --users-per-pass.

    python benchmarks/beam_search_throughput.py runs/office-tiger --beams 10 50 --users-per-pass 16 64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from genrec.checkpoints import BEST_CHECKPOINT, load_weights
from genrec.eval.evaluator import evaluate
from genrec.run_dir import RunDir
from genrec.runner import build_model, dataset_for, split_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--beams", type=int, nargs="+", default=[50])
    parser.add_argument("--users-per-pass", type=int, nargs="+", default=[16])
    parser.add_argument("--users", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    config = RunDir.open(args.run_dir).config()
    dataset = dataset_for(config.data)
    split = split_for(dataset, config)
    model = build_model(dataset, config, progress=False)
    load_weights(model, args.run_dir / BEST_CHECKPOINT)
    model = model.to(args.device).eval()
    cases = split.cases("test").take(slice(0, args.users))
    rows = []
    for beams in args.beams:
        for per_pass in args.users_per_pass:
            model.config.num_beams, model.config.eval_users_per_pass = beams, per_pass
            scorer = model.scorer()
            started = time.perf_counter()
            metrics = evaluate(
                scorer,
                split.sequences,
                cases,
                dataset.num_items,
                ks=[min(10, beams)],
                batch_size=256,
                max_history=model.max_len,
                device=args.device,
                progress=False,
            )
            seconds = time.perf_counter() - started
            rows.append(
                {
                    "beams": beams,
                    "users_per_pass": per_pass,
                    "users": len(cases),
                    "seconds": seconds,
                    "users_per_s": len(cases) / seconds,
                    f"hr@{min(10, beams)}": metrics[f"hr@{min(10, beams)}"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
