"""How far a training epoch is from the arithmetic limit of this CPU: matrix-product FLOPs of one
real epoch, divided by the rate this machine's GEMM reaches, against the measured epoch time.

    python benchmarks/hstu_flops.py [--config configs/ml-100k/hstu.yaml] [--threads 2] [--epochs 3] \
        [--set KEY=VALUE ...]

1. FLOPs: one epoch of the recipe (its real batches, micro-batches and loss) runs under
   `torch.utils.flop_counter.FlopCounterMode`, which counts every matrix product of the forward and
   backward passes (mm, addmm, bmm, einsum's products); element-wise work (SiLU, layer norm, dropout,
   the optimizer) is not counted, so the limit below is a lower bound of any implementation's time.
2. GEMM rate: the best of several fp32 `torch.mm` of 2048 x 2048 x 2048 at `--threads` threads, and
   the rate of the recipe's most common product shapes, for reference.
3. Measured: median seconds of epochs 2..E of the same trainer, no counter, no validation. Also
   each epoch against a GEMM probe taken just before it ("paired"): the machine's speed drifts in
   phases, and a probe taken at another time than the epochs compares the phases.

Prints one line per figure and a final JSON object. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def inplace_addmm_flop(self_shape: tuple, a_shape: tuple, b_shape: tuple, *args: object, **kwargs: object) -> int:
    """FLOPs of x.addmm_(a [m, k], b [k, n]) (torch's counter gets tensor shapes here): 2 m k n."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def gemm_rate(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """FLOP/s of fp32 [m, k] @ [k, n] on this process's threads (best of repeated runs)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - started)
    return 2 * m * k * n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ml-100k/hstu.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (the first is warm-up)")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from genrec.allocator import keep_freed_memory
    from genrec.config import load_config
    from genrec.runner import trainer_without_run_dir

    keep_freed_memory()  # as the genrec command does

    config = load_config(args.config, [*args.set, "train.device=cpu"])
    trainer = trainer_without_run_dir(config)

    # the in-place addmm_ (the blocked item scores' table gradient) is not in torch's registry: count it as addmm
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: inplace_addmm_flop})
    with counter:
        trainer.train_epoch(0, batches=list(trainer.objective.batches(0)))
    flops = counter.get_total_flops()
    by_op = Counter({str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()})

    seconds, rates = [], []
    for epoch in range(1, args.epochs + 1):
        batches = list(trainer.objective.batches(epoch))  # collation is not the step's arithmetic
        rates.append(gemm_rate(2048, 2048, 2048, seconds=0.5))  # the machine's phase right now
        started = time.perf_counter()
        trainer.train_epoch(epoch, batches=batches)
        seconds.append(time.perf_counter() - started)
    timed = slice(1, None) if len(seconds) > 1 else slice(None)
    measured = statistics.median(seconds[timed])
    # each epoch against the GEMM rate measured just before it: this machine's speed drifts by
    # 15-20% in phases of tens of seconds, and a probe taken at another time compares the phases
    paired = statistics.median(s * r / flops for s, r in zip(seconds[timed], rates[timed]))

    peak = gemm_rate(2048, 2048, 2048)
    dim = getattr(config.model, "dim", 64)
    shaped = gemm_rate(2560, dim, trainer.model.num_items + 1)  # user vectors x the item table
    limit = flops / peak
    result = {
        "config": config.name,
        "threads": args.threads,
        "epoch_gflop": flops / 1e9,
        "gflop_by_op": {op: n / 1e9 for op, n in by_op.most_common()},
        "gemm_gflops_2048": peak / 1e9,
        "gemm_gflops_item_scores": shaped / 1e9,
        "limit_s": limit,
        "measured_s": measured,
        "epoch_seconds": seconds,
        "ratio": measured / limit,
        "gemm_gflops_before_each_epoch": [r / 1e9 for r in rates],
        "ratio_paired": paired,
    }
    print(f"{config.name}: {flops / 1e9:.1f} GFLOP of matrix products per epoch ({args.threads} threads)")
    print(f"GEMM rate: {peak / 1e9:.1f} GFLOP/s (2048^3), {shaped / 1e9:.1f} GFLOP/s (item scores shape)")
    print(f"limit {limit:.2f} s/epoch, measured {measured:.2f} s/epoch: {measured / limit:.1f}x the limit")
    print(
        f"each epoch against the GEMM rate just before it (median of epochs 2..{args.epochs}): {paired:.2f}x "
        f"(rates {', '.join(f'{r / 1e9:.0f}' for r in rates)} GFLOP/s)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
