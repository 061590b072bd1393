"""Next-item losses over user vectors, with negative sampling kept apart from the loss.

Every loss takes the user vectors of the positions that have a target, the target ids and the
model (for `item_vectors`), so any model plugs into any loss:
    loss(users [P, D], positives [P] int64, model) -> scalar (mean over P, or sum with reduction="sum")
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from genrec.models.base import SequentialRecommender
from genrec.train.blocked_scores import sampled_scores, softmax_cross_entropy


class FullSoftmaxLoss(nn.Module):
    """Cross-entropy over the whole catalogue (padding excluded)."""

    def __init__(self, temperature: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.temperature = temperature
        self.reduction = reduction

    def forward(self, users: torch.Tensor, positives: torch.Tensor, model: SequentialRecommender) -> torch.Tensor:
        # the [P, N+1] logits, a cache-sized block of rows at a time on a CPU; column 0 (padding) never counts
        return softmax_cross_entropy(users, model.all_item_vectors(), positives, self.temperature, self.reduction)


class NegativeSampler(ABC):
    """Draws negatives for each positive; returns ids and their log sampling probability."""

    num_negatives: int

    def prepare(self, positives: torch.Tensor) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Called once per batch with all its positives [P] (the in-batch pool)."""

    @abstractmethod
    def sample(self, positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """positives [P] -> (negative ids [P, K] int64, log q of each [P, K] or None if uniform)."""

    def log_q(self, ids: torch.Tensor) -> torch.Tensor | None:
        """log sampling probability of `ids` (None when it is the same for every item)."""
        return None


class UniformNegatives(NegativeSampler):
    """K items drawn uniformly from 1..N, with replacement (generative-recommenders' local sampler)."""

    def __init__(self, num_items: int, num_negatives: int = 128) -> None:
        self.num_items = num_items
        self.num_negatives = num_negatives

    def sample(self, positives: torch.Tensor) -> tuple[torch.Tensor, None]:
        shape = (positives.shape[0], self.num_negatives)
        return torch.randint(1, self.num_items + 1, shape, device=positives.device), None


class InBatchNegatives(NegativeSampler):
    """K negatives per row drawn from the batch's own positives, so popular items are drawn more
    often; `log_q` (log of the in-batch frequency) lets the loss correct for that bias."""

    def __init__(self, num_items: int, num_negatives: int = 128) -> None:
        self.num_items = num_items
        self.num_negatives = num_negatives
        self._pool = torch.zeros(0, dtype=torch.long)
        self._log_q = torch.zeros(num_items + 1)

    def prepare(self, positives: torch.Tensor) -> None:
        self._pool = positives
        counts = torch.bincount(positives, minlength=self.num_items + 1).float()
        self._log_q = torch.log(counts.clamp(min=1) / positives.numel())

    def sample(self, positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, self._pool.numel(), (positives.shape[0], self.num_negatives), device=positives.device)
        ids = self._pool[index]
        return ids, self._log_q[ids]

    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        return self._log_q[ids]


class SampledSoftmaxLoss(nn.Module):
    """Softmax over the positive and K sampled negatives: logits = u . v / temperature - log q.

    Negatives equal to the row's positive are masked out. With `UniformNegatives`, 128 negatives
    and temperature 0.05 on L2-normalised vectors this is generative-recommenders' recipe; with
    `InBatchNegatives` it is in-batch InfoNCE with the logQ popularity correction.
    """

    def __init__(
        self,
        sampler: NegativeSampler,
        temperature: float = 0.05,
        score_all_items: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        """score_all_items: compute [P, N+1] logits and pick the sampled ones (True) or gather the
        [P, K, D] sampled vectors (False); None picks whichever moves less memory. Same result."""
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.sampler = sampler
        self.temperature = temperature
        self.score_all_items = score_all_items
        self.reduction = reduction

    def forward(self, users: torch.Tensor, positives: torch.Tensor, model: SequentialRecommender) -> torch.Tensor:
        self.sampler.prepare(positives)
        negatives, neg_log_q = self.sampler.sample(positives)  # [P, K]
        table = model.all_item_vectors()  # [N+1, D], normalised once rather than per sampled row
        K = negatives.shape[1]
        score_all = self.score_all_items
        if score_all is None:  # small catalogue: scoring every item moves less memory than gathering
            score_all = table.shape[0] <= K * table.shape[1]
        if score_all:
            # one gather of positive and negatives, a cache-sized block of rows at a time on a CPU
            logits = sampled_scores(users, table, torch.cat([positives.unsqueeze(1), negatives], dim=1))  # [P, 1+K]
        else:
            # F.embedding, not table[...]: the same rows, and a backward that sums repeated rows in a
            # fixed order on a CPU (indexing's accumulate differed run to run at 2 threads)
            pos_logits = (users * F.embedding(positives, table)).sum(-1, keepdim=True)  # [P, 1]
            neg_logits = torch.einsum("pd,pkd->pk", users, F.embedding(negatives, table))  # [P, K]
            logits = torch.cat([pos_logits, neg_logits], dim=1)  # [P, 1+K]
        logits = logits.float() / self.temperature
        if neg_log_q is not None:
            pos_log_q = self.sampler.log_q(positives).unsqueeze(1)  # [P, 1]
            logits = logits - torch.cat([pos_log_q, neg_log_q], dim=1)
        same = torch.cat(
            [torch.zeros_like(positives, dtype=torch.bool).unsqueeze(1), negatives == positives.unsqueeze(1)], dim=1
        )
        logits = logits.masked_fill(same, -math.inf)
        return F.cross_entropy(logits, torch.zeros_like(positives), reduction=self.reduction)


class SharedPoolInfoNCE(nn.Module):
    """HLLM's InfoNCE: every positive is scored against the batch's other positives (in-batch
    negatives) and a pool of `num_negatives` uniform items shared by the whole batch.

    Candidates are de-duplicated, so the item vectors are computed once per distinct item (what an
    item LLM trained end to end needs) and a negative never equals its row's positive. The
    temperature can be learned (as a log scale, clamped so that it stays >= 1 / max_scale, as in the
    reference). Optionally, negatives whose item vector is more similar to the positive's than
    `false_negative_threshold` (cosine) are masked, as HLLM does for near-duplicate items.
    """

    def __init__(
        self,
        num_items: int,
        num_negatives: int = 512,
        temperature: float = 0.07,
        learn_temperature: bool = False,
        false_negative_threshold: float | None = None,
        max_scale: float = 100.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if temperature <= 0 or 1 / temperature > max_scale:
            raise ValueError(f"temperature must be in [{1 / max_scale}, inf), got {temperature}")
        self.num_items = num_items
        self.num_negatives = num_negatives
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)), requires_grad=learn_temperature)
        self.max_log_scale = math.log(max_scale)
        self.false_negative_threshold = false_negative_threshold
        self.reduction = reduction

    @property
    def temperature(self) -> float:
        return float(torch.exp(-self.log_scale.detach()))

    def forward(self, users: torch.Tensor, positives: torch.Tensor, model: SequentialRecommender) -> torch.Tensor:
        """users [P, D], positives [P] -> cross-entropy of each positive among the unique candidates."""
        with torch.no_grad():
            self.log_scale.clamp_(0.0, self.max_log_scale)
        pool = torch.randint(1, self.num_items + 1, (self.num_negatives,), device=positives.device)
        candidates, inverse = torch.unique(torch.cat([positives, pool]), return_inverse=True)  # [C], [P + K]
        target = inverse[: positives.shape[0]]  # [P] column of each row's positive
        vectors = model.item_vectors(candidates)  # [C, D]
        logits = (users @ vectors.T).float() * self.log_scale.exp()  # [P, C]
        if self.false_negative_threshold is not None:
            with torch.no_grad():
                unit = F.normalize(vectors.float(), dim=-1)
                similar = unit[target] @ unit.T > self.false_negative_threshold  # [P, C]
                similar[torch.arange(len(target), device=target.device), target] = False
            logits = logits.masked_fill(similar, -math.inf)
        return F.cross_entropy(logits, target, reduction=self.reduction)
