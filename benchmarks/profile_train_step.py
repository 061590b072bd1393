"""Where the time of a genrec training step goes, on the real data of a recipe.

    python benchmarks/profile_train_step.py configs/ml-100k/hstu.yaml [--steps 8] [--set KEY=VALUE ...]

Builds the recipe's model and trainer, runs one warm-up step, then profiles `--steps` training
steps with torch.profiler and prints (1) the time per phase of a step (batch collation, forward,
loss, backward, optimizer) and (2) the operators with the most self CPU time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--rows", type=int, default=25, help="operators to list")
    args = parser.parse_args()

    from genrec.allocator import keep_freed_memory
    from genrec.config import load_config
    from genrec.runner import trainer_without_run_dir

    keep_freed_memory()  # as the genrec command does

    config = load_config(args.config, [*args.set, "train.device=cpu"])
    trainer = trainer_without_run_dir(config)
    batches = trainer.objective.batches(1)
    trainer.train_epoch(0, batches=[next(batches)])  # warm-up
    collated = []
    started = time.perf_counter()
    for _ in range(args.steps):
        collated.append(next(batches))
    collate_s = (time.perf_counter() - started) / args.steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("train_epoch"):
            started = time.perf_counter()
            trainer.train_epoch(1, batches=collated)
            step_s = (time.perf_counter() - started) / args.steps
    print(
        f"{config.name}: model {config.model.name}, batch {config.train.batch_size}, micro-batch "
        f"{trainer.objective.micro_batch_size or 'whole'}, {torch.get_num_threads()} threads"
    )
    print(f"collate {collate_s * 1000:.1f} ms/step, train step {step_s * 1000:.1f} ms/step (profiled)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
