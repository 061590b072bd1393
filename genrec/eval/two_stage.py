"""Two-stage evaluation: retrieve the top R items with a retrieval scorer, rerank them with a ranker,
and measure the reranked list under the evaluator's rules.

The rules are the full-ranking evaluator's (`genrec.eval.evaluator`): the user's history is masked
(never the target), ranks are pessimistic (ties count against the target), and a target the
retrieval stage does not put in its top R is a miss at every cutoff (its reciprocal rank is 0). So
with a ranker that returns the retrieval scores themselves, HR@K and NDCG@K for K <= R equal the
evaluator's exactly.

Blending: with `retrieval_weight` w > 0 the reranking score is z(ranker) + w * z(retrieval), each
standardised over the case's R retrieved candidates (mean 0, standard deviation 1), so w weighs the
two stages' orders whatever their scales (a cosine, a probability). w = 0 is the ranker alone.
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
    retrieval_weight: float = 0.0,
) -> torch.Tensor:
    """[B] float64 rank of each target in the reranked top `candidates` (inf when it is not retrieved).

    retrieval_scores: [B, N+1]; targets: [B]; history_rows/items: [X] the masked (row, item) pairs;
    ranker: candidates [B, R] -> [B, R] scores; retrieval_weight: see the module docstring.
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
    if retrieval_weight:
        retrieved_scores = retrieval_scores.gather(1, top).float()
        scores = standardised(scores, real) + retrieval_weight * standardised(retrieved_scores, real)
    is_target = top == targets[:, None]  # [B, R]
    target_score = torch.where(is_target, scores, torch.zeros_like(scores)).sum(dim=1)  # [B]
    above = ((scores >= target_score[:, None]) & real & ~is_target).sum(dim=1)
    retrieved = (retrieval_ranks <= R) & is_target.any(dim=1)  # pessimistic: ties at the cut are misses
    inf = torch.full((B,), torch.inf, dtype=torch.float64, device=above.device)
    return torch.where(retrieved, (above + 1).to(torch.float64), inf)


def standardised(scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[B, R] scores shifted and scaled to mean 0, standard deviation 1 over each row's `real` [B, R]
    entries (a row whose real scores are all equal becomes 0)."""
    weight = real.float()
    count = weight.sum(dim=1, keepdim=True).clamp(min=1)
    values = torch.where(real, scores, torch.zeros_like(scores))
    mean = values.sum(dim=1, keepdim=True) / count
    spread = (((values - mean) * weight) ** 2).sum(dim=1, keepdim=True) / count
    return (scores - mean) / spread.sqrt().clamp(min=1e-12)


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
    retrieval_weight: float = 0.0,
) -> dict[str, float]:
    """HR@K / NDCG@K / MRR of the top `candidates` of `retrieval`, reordered by `ranker` (blended with
    the retrieval scores by `retrieval_weight`, see the module docstring), plus `recall@R`: the share
    of targets the retrieval stage kept. Other arguments as `evaluate`."""
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
            retrieval_weight,
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
