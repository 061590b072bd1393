"""Beam search constrained to valid semantic IDs: every finished beam is a real item.

The search is model-agnostic: `step` feeds each beam's newest token to the model (TIGER's decoder,
a causal LLM) and returns next-token log-probs, and the trie's `LevelTables` say which tokens may
follow each prefix. All beams of all users expand in one tensor operation per level, so the cost is one
model step per SID level. Nothing here samples: the result depends on the log-probs alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from genrec.items.trie import LevelTables

# step(tokens, parents) -> [R, V] next-token log-probs of R beams. tokens: [R] each beam's newest
# token; parents: [R] the row of the previous call that each beam continues (a model with a cache
# reorders it by `parents`). Both are None on the first call, which has one row per user.
StepFn = Callable[[torch.Tensor | None, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class Beams:
    """The finished beams of B users, best first.

    leaves: [B, K] int64 the SID (leaf of the trie) of each beam, -1 for an empty beam (fewer than
            K valid SIDs under the search's prefixes)
    scores: [B, K] float the beam's log-probability (-inf for an empty beam)
    tokens: [B, K, D] int64 the generated token ids
    """

    leaves: torch.Tensor
    scores: torch.Tensor
    tokens: torch.Tensor


@torch.no_grad()
def constrained_beam_search(step: StepFn, tables: LevelTables, batch_size: int, num_beams: int) -> Beams:
    """The `num_beams` most probable valid SIDs for each of `batch_size` users."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    device = tables.leaf_items.device
    B = batch_size
    node = torch.zeros(B, 1, dtype=torch.long, device=device)  # [B, k] trie node of each beam
    score = torch.zeros(B, 1, device=device)  # [B, k]
    prefix = torch.zeros(B, 1, 0, dtype=torch.long, device=device)  # [B, k, t]
    tokens = parents = None
    for level in range(tables.depth):
        k = node.shape[1]
        level_tokens, children = tables.tokens[level], tables.children[level]  # [T], [nodes, T]
        logp = step(tokens, parents).float()  # [B*k, V]
        logp = logp[:, level_tokens].view(B, k, -1)  # [B, k, T]
        child = children[node.clamp(min=0)]  # [B, k, T]; an empty beam's score is -inf anyway
        total = torch.where(child >= 0, score[..., None] + logp, float("-inf"))
        T = total.shape[-1]
        score, flat = total.view(B, k * T).topk(min(num_beams, k * T), dim=1)  # [B, k']
        beam, column = flat // T, flat % T
        node = torch.where(torch.isfinite(score), child.view(B, k * T).gather(1, flat), -1)
        chosen = prefix.gather(1, beam[..., None].expand(-1, -1, prefix.shape[-1]))
        prefix = torch.cat([chosen, level_tokens[column][..., None]], dim=2)
        tokens = prefix[..., -1].reshape(-1)
        parents = (torch.arange(B, device=device)[:, None] * k + beam).reshape(-1)
    return Beams(node, score, prefix)


def beams_to_scores(beams: Beams, tables: LevelTables, num_items: int) -> torch.Tensor:
    """[B, N+1] scores for the shared evaluator: the items of each beam score its log-probability
    (items sharing a SID tie), every item outside the beams scores -inf (ranked after all of them)."""
    B = beams.leaves.shape[0]
    scores = torch.full((B, num_items + 1), float("-inf"), device=beams.scores.device)
    valid = beams.leaves >= 0  # [B, K]
    items = tables.leaf_items[beams.leaves.clamp(min=0)]  # [B, K, M]
    keep = valid[..., None] & (items > 0)
    rows = torch.arange(B, device=scores.device)[:, None, None].expand_as(items)
    values = beams.scores[..., None].expand_as(items)
    # beams are best first and distinct, so each item is written once
    scores[rows[keep], items[keep]] = values[keep]
    return scores
