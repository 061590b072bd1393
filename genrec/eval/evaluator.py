"""The full-ranking evaluator shared by every model.

A scorer is any callable that maps an `EvalBatch` (users and their histories) to a `[B, N+1]`
score matrix over the whole catalogue (column 0 is padding and ignored). The evaluator masks each
user's history (never the target), ranks the target pessimistically and averages the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from genrec.data.dataset import Sequences, flat_ranges
from genrec.data.splits import EvalCases
from genrec.errors import GenrecError
from genrec.eval.metrics import DEFAULT_KS, RankMetrics, pessimistic_ranks


@dataclass(frozen=True)
class EvalBatch:
    """What a scorer sees for B evaluation cases (never the targets).

    users:              [B] int64
    history:            [B, L] int64 item indices, oldest first, right-padded with 0
    history_timestamps: [B, L] int64 unix seconds, 0 where padded
    lengths:            [B] int64 number of real items per row (L = max of lengths, or the
                        evaluator's `max_history` cut: then the most recent items are kept)
    target_timestamps:  [B] int64 time of the request
    """

    users: torch.Tensor
    history: torch.Tensor
    history_timestamps: torch.Tensor
    lengths: torch.Tensor
    target_timestamps: torch.Tensor


Scorer = Callable[[EvalBatch], torch.Tensor]


def padded_histories(
    sequences: Sequences, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-padded item and timestamp matrices for ranges [starts, ends) of `sequences`.

    Returns (items [B, L] int64, timestamps [B, L] int64, lengths [B] int64), L = max length (>= 1).
    """
    lengths = (ends - starts).astype(np.int64)
    width = max(int(lengths.max(initial=0)), 1)
    columns = np.arange(width)
    valid = columns[None, :] < lengths[:, None]  # [B, L]
    positions = np.where(valid, starts[:, None] + columns[None, :], 0)
    if not len(sequences.items):  # every range is empty
        return np.zeros(positions.shape, dtype=np.int64), np.zeros(positions.shape, dtype=np.int64), lengths
    items = np.where(valid, sequences.items[positions], 0)
    timestamps = np.where(valid, sequences.timestamps[positions], 0)
    return items, timestamps, lengths


def has_nan(scores: torch.Tensor) -> bool:
    """Whether any score is NaN, in one pass: max propagates NaN (numpy's is the fastest on CPU)."""
    if scores.device.type == "cpu":
        return bool(np.isnan(scores.detach().numpy().max()))
    return bool(torch.isnan(scores.max()))


def auto_batch_size(num_items: int, max_history: int | None = None, budget: int = 1 << 24) -> int:
    """Rows per batch so that a [B, N+1] float score matrix stays near `budget` elements (64 MiB),
    and a sequence model's [B, L, L] attention over histories of `max_history` near 1/16 of it, the
    size of a CPU training micro-batch (ML-100K, L = 200: 26 rows; all 943 users in one batch made
    [943, 200, 200] attention and int64 time-gap tensors of 151 and 302 MB, the peak memory of a
    whole training run)."""
    rows = budget // (num_items + 1)
    if max_history:
        rows = min(rows, (budget // 16) // (max_history * max_history))
    return int(min(1024, max(1, rows)))


@dataclass(frozen=True)
class CaseBatch:
    """One batch of evaluation cases: what the scorer sees, and what the ranking rule needs.

    batch:          the scorer's input (`EvalBatch`, on the evaluation device)
    targets:        [B] int64 target items (on the evaluation device)
    history_rows, history_items: [X] int64 pairs (row, item) of the whole history of each case, the
                    items masked from the ranking (empty when the history is not masked)
    """

    batch: EvalBatch
    targets: torch.Tensor
    history_rows: torch.Tensor
    history_items: torch.Tensor


def case_batches(
    sequences: Sequences,
    cases: EvalCases,
    num_items: int,
    batch_size: int | None = None,
    max_history: int | None = None,
    mask_history: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "eval",
) -> Iterator[CaseBatch]:
    """The cases in batches of `batch_size` (default: `auto_batch_size`), for `evaluate` and
    the two-stage evaluator alike; see `evaluate` for the arguments."""
    device = torch.device(device)
    batch_size = batch_size or auto_batch_size(num_items, max_history)
    starts = range(0, len(cases), batch_size)
    for begin in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        end = min(begin + batch_size, len(cases))
        h_start, h_end = cases.history_start[begin:end], cases.history_end[begin:end]
        shown_start = h_start if max_history is None else np.maximum(h_start, h_end - max_history)
        items, times, lengths = padded_histories(sequences, shown_start, h_end)
        batch = EvalBatch(
            users=torch.from_numpy(cases.users[begin:end]).to(device),
            history=torch.from_numpy(items).to(device),
            history_timestamps=torch.from_numpy(times).to(device),
            lengths=torch.from_numpy(lengths).to(device),
            target_timestamps=torch.from_numpy(cases.target_timestamps[begin:end]).to(device),
        )
        if mask_history:
            lengths_full = h_end - h_start
            history_items = torch.from_numpy(sequences.items[flat_ranges(h_start, lengths_full)])
            history_rows = torch.from_numpy(np.repeat(np.arange(end - begin), lengths_full))
        else:
            history_items = history_rows = torch.zeros(0, dtype=torch.long)
        targets = torch.from_numpy(cases.targets[begin:end]).to(device)
        yield CaseBatch(batch, targets, history_rows, history_items)


def checked_scores(scores: torch.Tensor, rows: int, num_items: int) -> torch.Tensor:
    """A scorer's [rows, N+1] output as float32, after checking its shape and that nothing is NaN."""
    if tuple(scores.shape) != (rows, num_items + 1):
        raise GenrecError(f"scorer returned scores of shape {tuple(scores.shape)}, expected ({rows}, {num_items + 1})")
    scores = scores.float()
    if has_nan(scores):
        raise GenrecError("scorer returned NaN scores; a NaN cannot be ranked (check the model for divergence)")
    return scores


# (a batch of cases, the scorer's [B, N+1] scores for it) -> [B] the rank of each target (inf = a miss)
RankRule = Callable[[CaseBatch, torch.Tensor], torch.Tensor]


def full_ranking(part: CaseBatch, scores: torch.Tensor) -> torch.Tensor:
    """The evaluator's rule: the pessimistic rank of each target among all unmasked items."""
    return pessimistic_ranks(scores, part.targets.to(scores.device), part.history_rows, part.history_items)


@torch.no_grad()
def evaluate(
    scorer: Scorer,
    sequences: Sequences,
    cases: EvalCases,
    num_items: int,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int | None = None,
    max_history: int | None = None,
    mask_history: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "eval",
    rank_rule: RankRule = full_ranking,
) -> dict[str, float]:
    """Full-ranking HR@K / NDCG@K / MRR of `scorer` on `cases`.

    sequences: the full sequences the cases' history ranges point into.
    max_history: give the scorer only the most recent `max_history` items (masking still uses the
        whole history).
    mask_history: exclude every item of the user's history from the ranking (not the target).
    rank_rule: how a target's rank follows from the scores (the two-stage evaluator reranks first).
    Returns {"hr@K": ..., "ndcg@K": ..., "mrr": ..., "num_users": C}.
    """
    metrics = RankMetrics(ks)
    for part in case_batches(
        sequences, cases, num_items, batch_size, max_history, mask_history, device, progress, desc
    ):
        scores = checked_scores(scorer(part.batch), len(part.targets), num_items)
        metrics.update(rank_rule(part, scores))
    return metrics.compute()
