"""Two or more variants of a recipe timed in one process, an epoch of each in turn.

    python benchmarks/ab_epochs.py configs/ml-100k/hstu.yaml \
        --variant "chunked: model.kernel=chunked" --variant "reference: model.kernel=reference" \
        [--rounds 6] [--set train.windows=latest] [--threads 2]

On a machine whose speed drifts (this one: ±15-20% in phases of tens of seconds, BENCHMARKS "HSTU
training speed"), timing the variants in separate runs one after the other compares the phases as
much as the code. Here every variant gets a trainer of its own in the same process, and the rounds
alternate one epoch of each (in a rotating order), so a slow phase hits them alike; the figure that
matters is each round's ratio to the first variant, whose median is printed with its range.
Variants are overrides of the config (`--set` syntax, comma-separated), so only what a config can
change is compared; a process-wide setting (the allocator, threads) needs `hstu_speed.py`.
The genrec command's allocator setting (`genrec/allocator.py`) is on, as in training.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'name: a.b=1, c=2' -> ('name', ['a.b=1', 'c=2']); 'name:' alone is the config as it is."""
    name, _, overrides = text.partition(":")
    if not name.strip():
        raise SystemExit(f"--variant needs a name before ':', got {text!r}")
    return name.strip(), [o.strip() for o in overrides.split(",") if o.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--variant", action="append", required=True, help="'name: key=value, ...' (two or more)")
    parser.add_argument("--set", action="append", default=[], help="override for every variant")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant]
    if len(variants) < 2:
        raise SystemExit("give two or more --variant")

    import torch

    from genrec.allocator import keep_freed_memory
    from genrec.config import load_config
    from genrec.runner import trainer_without_run_dir

    keep_freed_memory()
    torch.set_num_threads(args.threads)
    trainers = []
    for name, overrides in variants:
        trainer = trainer_without_run_dir(load_config(args.config, [*args.set, *overrides, "train.device=cpu"]))
        # warm-up: one-off costs (first allocations, lazy imports) out of the rounds
        trainer.train_epoch(1, batches=trainer.objective.batches(1))
        trainers.append((name, trainer))

    seconds: dict[str, list[float]] = {name: [] for name, _ in variants}
    for round_ in range(args.rounds):
        shift = round_ % len(trainers)  # rotate who goes first: no variant always follows the same one
        for name, trainer in trainers[shift:] + trainers[:shift]:
            started = time.perf_counter()
            trainer.train_epoch(round_ + 2, batches=trainer.objective.batches(round_ + 2))  # a whole epoch
            seconds[name].append(time.perf_counter() - started)

    first = variants[0][0]
    print(
        f"{args.config} {' '.join(args.set)}; {args.rounds} rounds, {args.threads} threads; ratio = variant / {first}"
    )
    print(f"{'variant':<24} {'median s/epoch':>15} {'fastest':>8} {'ratio (median)':>15} {'ratio range':>15}")
    for name, times in seconds.items():
        ratios = [t / b for t, b in zip(times, seconds[first])]
        print(
            f"{name:<24} {statistics.median(times):>15.3f} {min(times):>8.3f} {statistics.median(ratios):>15.3f} "
            f"{min(ratios):>7.3f}-{max(ratios):.3f}"
        )


if __name__ == "__main__":
    main()
