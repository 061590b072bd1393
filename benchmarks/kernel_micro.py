"""Per-call time of genrec's CPU kernels against their references, forward and backward together.

    python benchmarks/kernel_micro.py [--threads 1] [--repeats 30] [--json out.json]

Rows (shapes of the shipped ML-100K HSTU recipe and Amazon Beauty's full softmax by default):

  sampled scores      reference_sampled_scores vs blocked_sampled_scores: users [P, D] x table [N, D]
                      gathered at [P, 1+K] indices, then a sum backward
  softmax CE          reference_softmax_cross_entropy vs blocked_softmax_cross_entropy: [P, D] x
                      [N, D], loss and backward
  dropout             F.dropout vs the bit-mask `bit_dropout` on HSTU's attention weights [B, H, L, L],
                      forward and backward
  HSTU attention      hstu_attention's reference vs the causal-chunked kernel on [B, H, L, d] with a
                      length-sorted batch (real rows) forward and backward

Each row times `--repeats` calls after 3 warm-up calls and reports the median milliseconds per call;
both sides get the same random inputs. Run it alone: another job on the cores makes the figures
meaningless (the 1-minute load average is printed first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def median_ms(call: Callable[[], None], repeats: int) -> float:
    """Median wall milliseconds of `call()` over `repeats` calls, after 3 warm-up calls."""
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def forward_backward(function: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> Callable[[], None]:
    """A call that evaluates function(*inputs) and back-propagates its sum into the inputs' .grad."""

    def call() -> None:
        for x in inputs:
            x.grad = None
        function(*inputs).sum().backward()

    return call


def leaf(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).mul_(0.1).requires_grad_()


def sampled_scores_row(positions: int, items: int, dim: int, negatives: int, repeats: int) -> dict:
    from genrec.train.blocked_scores import blocked_sampled_scores, reference_sampled_scores

    users, table = leaf(positions, dim), leaf(items, dim)
    index = torch.randint(1, items, (positions, 1 + negatives))
    return {
        "row": f"sampled scores P={positions} N={items} D={dim} K={negatives}",
        "reference_ms": median_ms(
            forward_backward(lambda u, t: reference_sampled_scores(u, t, index), users, table), repeats
        ),
        "genrec_ms": median_ms(
            forward_backward(lambda u, t: blocked_sampled_scores(u, t, index), users, table), repeats
        ),
    }


def softmax_row(positions: int, items: int, dim: int, repeats: int) -> dict:
    from genrec.train.blocked_scores import blocked_softmax_cross_entropy, reference_softmax_cross_entropy

    users, table = leaf(positions, dim), leaf(items, dim)
    positives = torch.randint(1, items, (positions,))

    def reference(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return reference_softmax_cross_entropy(u, t, positives, 0.05, "sum")

    def blocked(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return blocked_softmax_cross_entropy(u, t, positives, 0.05, "sum")

    return {
        "row": f"softmax CE P={positions} N={items} D={dim}",
        "reference_ms": median_ms(forward_backward(reference, users, table), repeats),
        "genrec_ms": median_ms(forward_backward(blocked, users, table), repeats),
    }


def dropout_row(shape: tuple[int, ...], p: float, repeats: int) -> dict:
    from genrec.models.dropout import bit_dropout

    weights = leaf(*shape)
    return {
        "row": f"dropout p={p} {list(shape)}",
        "reference_ms": median_ms(forward_backward(lambda w: F.dropout(w, p, training=True), weights), repeats),
        "genrec_ms": median_ms(forward_backward(lambda w: bit_dropout(w, p), weights), repeats),
    }


def attention_row(batch: int, heads: int, length: int, dim: int, repeats: int) -> dict:
    from genrec.models.hstu_attention import chunked_hstu_attention, reference_hstu_attention

    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, length + 1, (batch,), generator=generator).sort(descending=True).values
    lengths[0] = length  # the batch is padded to its longest row
    q, k, v = (leaf(batch, heads, length, dim) for _ in range(3))
    bias = leaf(1, 1, length, length)

    def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return reference_hstu_attention(q, k, v, bias, 200)

    def chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return chunked_hstu_attention(q, k, v, bias, 200, lengths=lengths)

    return {
        "row": f"HSTU attention [B={batch}, H={heads}, L={length}, d={dim}], lengths 20..{length} sorted",
        "reference_ms": median_ms(forward_backward(reference, q, k, v), repeats),
        "genrec_ms": median_ms(forward_backward(chunked, q, k, v), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads {args.threads}, 1-minute load average {os.getloadavg()[0]:.2f}")
    rows = [
        sampled_scores_row(2500, 1683, 50, 128, args.repeats),  # an ML-100K micro-batch, hstu.yaml
        softmax_row(1100, 12102, 64, args.repeats),  # an Amazon Beauty batch, full softmax
        dropout_row((16, 2, 200, 200), 0.2, args.repeats),
        attention_row(16, 1, 200, 50, args.repeats),
    ]
    print("| kernel | reference ms | genrec ms | speed-up |\n|---|---:|---:|---:|")
    for row in rows:
        row["speedup"] = row["reference_ms"] / row["genrec_ms"]
        print(f"| {row['row']} | {row['reference_ms']:.1f} | {row['genrec_ms']:.1f} | {row['speedup']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
