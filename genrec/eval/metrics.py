"""Ranking metrics from the rank of each target (1 = best)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

DEFAULT_KS = (1, 5, 10, 50, 200)


def pessimistic_ranks(
    scores: torch.Tensor, targets: torch.Tensor, excluded_rows: torch.Tensor, excluded_items: torch.Tensor
) -> torch.Tensor:
    """Rank of each target among the competing items, ties counted against the target.

    scores:         [B, N+1] float, one score per item (column 0 = padding, never competes)
    targets:        [B] int64 item index of each row's target
    excluded_rows, excluded_items: [X] int64 pairs (row, item) that do not compete (the user's
                    history); repeats are fine, and a pair naming the row's target is ignored
    Returns [B] int64: 1 + the number of other competing items whose score is >= the target's.

    One dense pass counts every item scoring >= the target; the few excluded items are then
    subtracted sparsely, instead of building and combining [B, N+1] masks.
    """
    B, n_plus_1 = scores.shape
    rows = torch.arange(B, device=scores.device)
    target_scores = scores[rows, targets]  # [B]
    at_least = count_at_least(scores, target_scores)  # [B], counts the target itself
    ex_rows = torch.cat([rows, excluded_rows.to(scores.device)])  # padding column 0 of every row
    ex_items = torch.cat([torch.zeros_like(rows), excluded_items.to(scores.device)])
    keep = ex_items != targets[ex_rows]
    pairs = torch.unique(ex_rows[keep] * n_plus_1 + ex_items[keep])  # [X'] distinct (row, item)
    ex_rows, ex_items = pairs // n_plus_1, pairs % n_plus_1
    beaten = scores[ex_rows, ex_items] >= target_scores[ex_rows]
    return at_least - torch.bincount(ex_rows[beaten], minlength=B)


def count_at_least(scores: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """[B] int64: per row, how many of `scores` [B, C] are >= that row's threshold [B].

    On CPU numpy counts the comparison mask several times faster than torch's sum over a bool
    tensor (which widens it to int64 first); elsewhere torch does it on the device.
    """
    if scores.device.type == "cpu":
        mask = scores.detach().numpy() >= thresholds.detach().numpy()[:, None]
        return torch.from_numpy(np.count_nonzero(mask, axis=1).astype(np.int64))
    return (scores >= thresholds.unsqueeze(1)).sum(dim=1)


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
