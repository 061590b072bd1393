"""Ranking metrics from the rank of each target (1 = best)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_KS = (1, 5, 10, 50, 200)


def pessimistic_ranks(scores: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """Rank of each target among the items not excluded, ties counted against the target.

    scores:   [B, N+1] float, one score per item (column 0 = padding)
    targets:  [B] int64 item index of each row's target
    excluded: [B, N+1] bool, items that do not compete (padding, the user's history); the target
              itself is never excluded, whatever this says
    Returns [B] int64: 1 + the number of other competing items whose score is >= the target's.
    """
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_scores = scores[rows, targets].unsqueeze(1)  # [B, 1]
    competing = ~excluded
    competing[rows, targets] = False  # "other" items only
    return 1 + ((scores >= target_scores) & competing).sum(dim=1)


class RankMetrics:
    """Accumulates HR@K, NDCG@K and MRR over batches of ranks.

    HR@K = mean(rank <= K); NDCG@K = mean(1 / log2(rank + 1) if rank <= K else 0) (one relevant
    item, so the ideal DCG is 1); MRR = mean(1 / rank).
    """

    def __init__(self, ks: Sequence[int] = DEFAULT_KS) -> None:
        if not ks or any(int(k) < 1 for k in ks):
            raise ValueError(f"cutoffs must be positive integers, got {list(ks)}")
        self.ks = sorted({int(k) for k in ks})
        self.count = 0
        self._sums = {name: 0.0 for name in self.names()}

    def names(self) -> list[str]:
        return [f"{m}@{k}" for k in self.ks for m in ("hr", "ndcg")] + ["mrr"]

    def update(self, ranks: torch.Tensor) -> None:
        """ranks: [B] int, 1-based."""
        ranks = ranks.to(torch.float64)
        gains = 1.0 / torch.log2(ranks + 1.0)
        for k in self.ks:
            hit = ranks <= k
            self._sums[f"hr@{k}"] += hit.sum().item()
            self._sums[f"ndcg@{k}"] += torch.where(hit, gains, torch.zeros_like(gains)).sum().item()
        self._sums["mrr"] += (1.0 / ranks).sum().item()
        self.count += ranks.numel()

    def compute(self) -> dict[str, float]:
        """Means over every rank seen, plus `num_users` (the number of evaluation cases)."""
        n = max(self.count, 1)
        return {**{name: total / n for name, total in self._sums.items()}, "num_users": self.count}
