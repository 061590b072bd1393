"""Two-stage evaluation: retrieve the top R items with a retrieval scorer, rerank them with a ranker,
and measure the reranked list under the evaluator's rules.

The rules are the full-ranking evaluator's (`genrec.eval.evaluator`): the user's history is masked
(never the target), ranks are pessimistic (ties count against the target), and a target the
retrieval stage does not put in its top R is a miss at every cutoff (its reciprocal rank is 0). So
with a ranker that returns the retrieval scores themselves, HR@K and NDCG@K for K <= R equal the
evaluator's exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from genrec.data.dataset import Sequences
from genrec.data.splits import EvalCases
from genrec.eval.evaluator import CaseBatch, EvalBatch, Scorer, evaluate
from genrec.eval.metrics import DEFAULT_KS, pessimistic_ranks

# (the cases' inputs, candidates [B, R] item indices) -> [B, R] scores, higher is better
CandidateScorer = Callable[[EvalBatch, torch.Tensor], torch.Tensor]


def reranked_ranks(
    retrieval_scores: torch.Tensor,
    targets: torch.Tensor,
    history_rows: torch.Tensor,
    history_items: torch.Tensor,
    ranker: Callable[[torch.Tensor], torch.Tensor],
    candidates: int,
) -> torch.Tensor:
    """[B] float64 rank of each target in the reranked top `candidates` (inf when it is not retrieved).

    retrieval_scores: [B, N+1]; targets: [B]; history_rows/items: [X] the masked (row, item) pairs;
    ranker: candidates [B, R] -> [B, R] scores.
    """
    B = retrieval_scores.shape[0]
    rows = torch.arange(B, device=retrieval_scores.device)
    retrieval_ranks = pessimistic_ranks(retrieval_scores, targets, history_rows, history_items)
    masked = retrieval_scores.clone()
    masked[:, 0] = -torch.inf
    masked[history_rows.to(masked.device), history_items.to(masked.device)] = -torch.inf
    masked[rows, targets] = retrieval_scores[rows, targets]  # the target is never masked
    R = min(candidates, masked.shape[1] - 1)
    top = masked.topk(R, dim=1).indices  # [B, R]
    real = masked.gather(1, top) > -torch.inf  # [B, R] masked items that only fill up the list do not compete
    scores = ranker(top).float()
    is_target = top == targets[:, None]  # [B, R]
    target_score = torch.where(is_target, scores, torch.zeros_like(scores)).sum(dim=1)  # [B]
    above = ((scores >= target_score[:, None]) & real & ~is_target).sum(dim=1)
    retrieved = (retrieval_ranks <= R) & is_target.any(dim=1)  # pessimistic: ties at the cut are misses
    inf = torch.full((B,), torch.inf, dtype=torch.float64, device=above.device)
    return torch.where(retrieved, (above + 1).to(torch.float64), inf)


def evaluate_two_stage(
    retrieval: Scorer,
    ranker: CandidateScorer,
    sequences: Sequences,
    cases: EvalCases,
    num_items: int,
    candidates: int = 200,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int | None = None,
    max_history: int | None = None,
    mask_history: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "eval two-stage",
) -> dict[str, float]:
    """HR@K / NDCG@K / MRR of the top `candidates` of `retrieval`, reordered by `ranker`, plus
    `recall@R`: the share of targets the retrieval stage kept. Other arguments as `evaluate`."""
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")

    def rerank(part: CaseBatch, scores: torch.Tensor) -> torch.Tensor:
        return reranked_ranks(
            scores,
            part.targets.to(scores.device),
            part.history_rows,
            part.history_items,
            lambda top: ranker(part.batch, top).to(scores.device),
            candidates,
        )

    # a kept target ranks within the R candidates and a dropped one is a miss, so recall@R = HR@R
    cut = min(candidates, num_items)
    result = evaluate(
        retrieval,
        sequences,
        cases,
        num_items,
        sorted({*ks, cut}),
        batch_size,
        max_history,
        mask_history,
        device,
        progress,
        desc,
        rank_rule=rerank,
    )
    recall = result[f"hr@{cut}"]
    if cut not in ks:
        del result[f"hr@{cut}"], result[f"ndcg@{cut}"]
    return {**result, f"recall@{candidates}": recall}
