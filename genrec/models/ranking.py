"""Rankers: per-task scores of (user history, candidate item) pairs, one head per task.

- `EarlyFusionRanker`: the candidate is appended to the history as a target token; the sequential
  backbone (SASRec, HSTU) reads both, and its output at the target position feeds the heads.
- `LateFusionRanker`: the backbone runs once per history and gives a user vector; an MLP reads it
  with the candidate's item vector.
- `EmbeddingRanker`: the non-sequential baseline: user and item embeddings -> MLP (DLRM-style).

Every ranker maps `Impressions` (B histories, C candidates each) to logits [B, C, T], T = the number of tasks (a binary head's logit goes
through a sigmoid; a regression head's output is the value itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from genrec.eval.evaluator import EvalBatch, Scorer
from genrec.models.base import SequentialRecommender, latest
from genrec.models.ranking_config import RankingConfig
from genrec.models.registry import model_builder

if TYPE_CHECKING:
    from genrec.data.dataset import Dataset, Sequences


@dataclass(frozen=True)
class Impressions:
    """B histories, each with C candidate items to score.

    users:      [B] int64
    items:      [B, L] int64 history items, oldest first, right-padded with 0
    timestamps: [B, L] int64 their times
    lengths:    [B] int64 real items per history (>= 1)
    candidates: [B, C] int64 the items to score
    candidate_timestamps: [B] int64 the time of the request
    """

    users: torch.Tensor
    items: torch.Tensor
    timestamps: torch.Tensor
    lengths: torch.Tensor
    candidates: torch.Tensor
    candidate_timestamps: torch.Tensor

    @staticmethod
    def of(
        batch: EvalBatch, candidates: torch.Tensor, device: torch.device, rows: torch.Tensor | None = None
    ) -> Impressions:
        """The evaluator's cases (`rows` of them, default all) with `candidates` [B, C] on `device`."""
        pick = (lambda t: t) if rows is None else (lambda t: t[rows.to(t.device)])
        return Impressions(
            pick(batch.users).to(device),
            pick(batch.history).to(device),
            pick(batch.history_timestamps).to(device),
            pick(batch.lengths).to(device).clamp(min=1),  # an empty history reads padding alone
            candidates.to(device),
            pick(batch.target_timestamps).to(device),
        )


def heads_mlp(in_dim: int, hidden: int, tasks: int) -> nn.Sequential:
    """[..., in_dim] -> [..., tasks]."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, tasks))


def pair_features(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """users [B, D], items [B, C, D] -> [B, C, 3D]: user, item and their elementwise product."""
    users = users[:, None, :].expand_as(items)
    return torch.cat([users, items, users * items], dim=-1)


class Ranker(nn.Module):
    """Base of the rankers: `forward` gives [B, C, T] logits; `scorer` serves the trainer's validation."""

    num_items: int
    max_len: int  # history items a ranker reads
    train_len: int  # events per training window
    config: RankingConfig
    heads: nn.Sequential  # [..., F] -> [..., T]

    def combined(self, logits: torch.Tensor, weights: dict[str, float] | None = None) -> torch.Tensor:
        """[..., T] -> [...] one ranking score: the weighted sum of the heads' predictions (a binary
        head's probability, a regression head's value); default: the first head alone."""
        weights = weights or {self.config.tasks[0].name: 1.0}
        total = torch.zeros(logits.shape[:-1], device=logits.device)
        for t, task in enumerate(self.config.tasks):
            if task.name in weights:
                value = logits[..., t].float()
                total = total + weights[task.name] * (value.sigmoid() if task.kind == "binary" else value)
        return total

    @torch.no_grad()
    def start_regression_at(self, means: torch.Tensor) -> None:
        """Set each regression head's output bias to its label's mean [T] (a rating head then starts
        near 3.5 instead of 0, and its MSE does not swamp the other heads early on)."""
        out = self.heads[-1]
        assert isinstance(out, nn.Linear)
        for t, task in enumerate(self.config.tasks):
            if task.kind == "regression":
                out.bias[t] = means[t]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class EarlyFusionRanker(Ranker):
    """The history with the candidate appended, through the backbone: its output at the candidate's
    position (causal: it reads the history and the candidate, nothing after) -> the heads."""

    def __init__(self, backbone: SequentialRecommender, config: RankingConfig) -> None:
        super().__init__()
        self.backbone, self.config = backbone, config
        self.num_items, self.max_len = backbone.num_items, backbone.max_len - 1
        self.train_len = backbone.max_len
        dim = backbone.item_vectors(torch.zeros(1, dtype=torch.long)).shape[-1]
        self.heads = heads_mlp(dim, config.hidden, len(config.tasks))

    def forward(self, batch: Impressions) -> torch.Tensor:
        """Each (history, candidate) pair is one sequence of B*C: [B, L] + [B, C] -> [B, C, T]."""
        items, timestamps, lengths = latest(batch.items, batch.timestamps, batch.lengths, self.max_len)
        candidates = batch.candidates
        B, C = candidates.shape
        rows = torch.arange(B, device=items.device)
        pad = items.new_zeros(B, 1)
        seq = torch.cat([items, pad], dim=1)  # [B, L+1]
        times = torch.cat([timestamps, pad], dim=1)
        seq = seq.masked_fill(torch.arange(seq.shape[1], device=seq.device)[None, :] >= lengths[:, None], 0)
        times[rows, lengths] = batch.candidate_timestamps
        seq = seq.repeat_interleave(C, dim=0)  # [B*C, L+1]
        times = times.repeat_interleave(C, dim=0)
        target = lengths.repeat_interleave(C)  # [B*C] the candidate's position
        flat = torch.arange(B * C, device=items.device)
        seq[flat, target] = candidates.reshape(-1)
        users = batch.users.repeat_interleave(C)  # [B*C]
        hidden = self.backbone.encode(seq, times, target + 1, users=users)  # [B*C, L+1, D]
        return self.heads(hidden[flat, target]).reshape(B, C, -1)

    def scorer(self) -> Scorer:
        """The backbone's next-item scores (the auxiliary loss trains them): scoring the whole catalogue
        by early fusion is one sequence per item."""
        return self.backbone.scorer()


class LateFusionRanker(Ranker):
    """The backbone's user vector after the history and the candidate's item vector -> MLP."""

    def __init__(self, backbone: SequentialRecommender, config: RankingConfig) -> None:
        super().__init__()
        self.backbone, self.config = backbone, config
        self.num_items, self.max_len = backbone.num_items, backbone.max_len
        self.train_len = backbone.max_len
        dim = backbone.item_vectors(torch.zeros(1, dtype=torch.long)).shape[-1]
        self.heads = heads_mlp(3 * dim, config.hidden, len(config.tasks))

    def forward(self, batch: Impressions) -> torch.Tensor:
        """[B, L] histories, [B, C] candidates -> [B, C, T]."""
        items, timestamps, lengths = latest(batch.items, batch.timestamps, batch.lengths, self.max_len)
        user = self.backbone.last_user_vectors(
            items, timestamps, lengths, batch.candidate_timestamps, batch.users
        )  # [B, D]
        return self.heads(pair_features(user, self.backbone.item_vectors(batch.candidates)))

    def scorer(self) -> Scorer:
        return self.backbone.scorer()


class EmbeddingRanker(Ranker):
    """The non-sequential baseline: a user embedding and an item embedding -> MLP (no history read)."""

    def __init__(self, num_users: int, num_items: int, config: RankingConfig) -> None:
        super().__init__()
        self.config, self.num_items, self.max_len, self.train_len = config, num_items, 1, config.train_len
        self.user_embedding = nn.Embedding(num_users + 1, config.dim)
        self.item_embedding = nn.Embedding(num_items + 1, config.dim, padding_idx=0)
        for table in (self.user_embedding, self.item_embedding):
            nn.init.normal_(table.weight, std=0.05)
        self.heads = heads_mlp(3 * config.dim, config.hidden, len(config.tasks))

    def forward(self, batch: Impressions) -> torch.Tensor:
        """[B] users, [B, C] candidates -> [B, C, T] (the history is not read)."""
        return self.heads(pair_features(self.user_embedding(batch.users), self.item_embedding(batch.candidates)))

    def scorer(self) -> Scorer:
        return CatalogueRankingScorer(self)


class CatalogueRankingScorer:
    """Adapts a ranker to the evaluator: [B, N+1] its combined score of every item."""

    def __init__(self, ranker: Ranker, chunk_rows: int = 64) -> None:
        self.ranker, self.chunk_rows = ranker, chunk_rows

    @torch.no_grad()
    def __call__(self, batch: EvalBatch) -> torch.Tensor:
        catalogue = torch.arange(self.ranker.num_items + 1)
        scores = []
        for start in range(0, len(batch.users), self.chunk_rows):
            rows = torch.arange(start, min(start + self.chunk_rows, len(batch.users)))
            part = Impressions.of(batch, catalogue[None, :].expand(len(rows), -1), self.ranker.device, rows)
            scores.append(self.ranker.combined(self.ranker(part)))
        return torch.cat(scores)  # [B, N+1]


def build_ranker(
    dataset: Dataset,
    config: RankingConfig,
    device: torch.device | None,
    progress: bool,
    train: Sequences | None = None,
) -> Ranker:
    """A fresh ranker for `dataset`: its backbone from the backbone's own builder (given `train`, the
    split's training events, when the backbone fits side features on them)."""
    if config.fusion == "none":
        return EmbeddingRanker(dataset.num_users, dataset.num_items, config)
    builder = model_builder(config.backbone.name)
    extra = {"train": train} if config.backbone.fits_features else {}
    backbone = builder(dataset, config.backbone, device, progress, **extra)
    assert isinstance(backbone, SequentialRecommender)
    cls = EarlyFusionRanker if config.fusion == "early" else LateFusionRanker
    return cls(backbone, config)
