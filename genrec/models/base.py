"""The contracts models follow. Losses, the trainer and the evaluator use only these.

A sequential model maps a batch of histories to one user vector per position (`encode`) and maps
item indices to item vectors (`item_vectors`); the score of item j for a user vector u is u . v_j.
It sees items only through its `item_encoder` (`genrec.models.item_encoder`), on both sides, and
the user only through the user index it is given (`users`: a model with user features reads them
as prefix tokens, `genrec.models.user_features`; the others ignore it).
A generative model (TIGER, the SID LLM) instead generates the next item's tokens: it computes its
own training loss from a batch and ranks items by generation (a beam search).
Both give the evaluator a `scorer()`, so every model is measured the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from genrec.errors import DataError
from genrec.eval.evaluator import EvalBatch, Scorer
from genrec.items.beam_search import Beams, beams_to_scores
from genrec.items.trie import LevelTables, SIDTrie
from genrec.models.base_config import GenerativeConfig
from genrec.models.item_encoder import ItemEncoder

if TYPE_CHECKING:
    from genrec.data.batching import SequenceBatch


class SequentialRecommender(nn.Module, ABC):
    """Base class of SASRec, HSTU and the user side of HLLM."""

    num_items: int
    max_len: int
    normalised: bool = False  # True when user and item vectors are L2-normalised (scores are cosines)
    item_encoder: ItemEncoder  # ids [...] -> [..., D]: the inputs it reads and the items it scores

    @abstractmethod
    def encode(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        query_timestamps: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """User vectors at every position.

        items: [B, L] int64 right-padded with 0; timestamps: [B, L] int64; lengths: [B] int64;
        query_timestamps: [B, L] int64 the time of the event each position predicts (optional;
        only time-aware models read it); users: [B] int64 the dataset's user indices, 0 for a user
        it does not know (optional, None = all unknown; only models with user features read it).
        Returns [B, L, D]; position t summarises items[:, :t+1] (causal).
        """

    def forward(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        query_timestamps: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Same as `encode` (so DistributedDataParallel can wrap the model)."""
        return self.encode(items, timestamps, lengths, query_timestamps, users)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints written before the item encoder had its name call it `item_embedding`
        old = prefix + "item_embedding."
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[prefix + "item_encoder." + key[len(old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scorer(self) -> Scorer:
        """Full-catalogue scores for the evaluator (the item table is computed once, here)."""
        return SequentialScorer(self)

    def skips_padding(self, device: torch.device) -> bool:
        """Whether a pass's cost follows the real positions of a batch, not its padded [B, L] slots
        (HSTU's packed tokens): micro-batches then buy nothing and training takes whole batches."""
        return False

    @property
    def train_len(self) -> int:
        """Events per user sequence in a training batch: the latest `max_len` inputs."""
        return self.max_len

    @abstractmethod
    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """[...] int64 item indices -> [..., D] item vectors (index 0 = padding)."""

    def all_item_vectors(self) -> torch.Tensor:
        """[N+1, D] the vectors of every item, padding first."""
        return self.item_vectors(torch.arange(self.num_items + 1, device=self.device))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def last_user_vectors(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        next_timestamps: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, D] the user vector after each row's last real item.

        next_timestamps: [B] the time of the request (the evaluated target's time), if known;
        users: [B] the rows' user indices (see `encode`).
        """
        query = None
        if next_timestamps is not None:
            query = torch.cat([timestamps[:, 1:], timestamps[:, -1:]], dim=1)  # next event's time
            query[torch.arange(items.shape[0], device=items.device), lengths - 1] = next_timestamps
        hidden = self.encode(items, timestamps, lengths, query, users)  # [B, L, D]
        rows = torch.arange(items.shape[0], device=items.device)
        return hidden[rows, lengths - 1]


class GenerativeRecommender(nn.Module, ABC):
    """Base class of models that generate the next item instead of scoring item vectors.

    Their configs are `GenerativeConfig`s: `num_beams` (the length of the ranking) and
    `eval_users_per_pass` (users per beam search of the scorer).
    """

    num_items: int
    max_len: int  # history items the model reads
    train_len: int  # events per user sequence in a training batch (each target is one example)
    item_tokens: torch.Tensor  # [N+1, L] the token ids of each item's semantic ID (row 0 = padding)
    config: GenerativeConfig

    @abstractmethod
    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """The loss summed over the batch's targets (a scalar), as the trainer's losses return it."""

    @abstractmethod
    def generate_next(
        self,
        users: torch.Tensor,
        history: torch.Tensor,
        lengths: torch.Tensor,
        tables: LevelTables,
        num_beams: int | None = None,
    ) -> Beams:
        """Constrained beam search for the next item of B users.

        users: [B] user indices; history: [B, H] right-padded item indices, oldest first; lengths: [B].
        Returns `Beams` whose leaves [B, K] index `tables` (K = num_beams, default config.num_beams), best first.
        """

    def scorer(self) -> Scorer:
        """[B, N+1] scores for an `EvalBatch`, from generation (items not generated score -inf)."""
        return GeneratedRankingScorer(self)

    def trie(self) -> SIDTrie:
        """The prefix trie of every item's SID tokens (what the constrained beam search may generate)."""
        return SIDTrie(self.item_tokens[1:].tolist(), range(1, self.num_items + 1))

    def level_tables(self) -> LevelTables:
        """`trie().level_tables()` on the model's device, built once (a model's SIDs never change)."""
        tables = self.__dict__.get("_level_tables")
        if tables is None or tables.leaf_items.device != self.item_tokens.device:
            tables = self.trie().level_tables().to(self.item_tokens.device)
            self.__dict__["_level_tables"] = tables
        return tables

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False):  # noqa: ANN201
        """As nn.Module's, but refuses a checkpoint trained with other semantic IDs than the model's."""
        saved = state_dict.get("item_tokens")
        if saved is None:
            raise DataError(f"this checkpoint has no SID token table: it is not a trained {self.config.name} model")
        current = self.item_tokens
        if saved.shape != current.shape or not torch.equal(saved.cpu(), current.cpu()):
            raise DataError(
                f"the semantic IDs (model.sid_file, or the dataset's) do not match the SID tokens of the "
                f"saved model (saved {tuple(saved.shape)} items x levels, now {tuple(current.shape)}; or "
                f"the codes differ): use the SIDs the model was trained with"
            )
        return super().load_state_dict(state_dict, strict, assign)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


Recommender = SequentialRecommender | GenerativeRecommender


class SequentialScorer:
    """Adapts a `SequentialRecommender` to the evaluator: [B, N+1] scores for an `EvalBatch`.

    The item table is computed once per scorer, so build a new scorer after each training step.
    """

    def __init__(self, model: SequentialRecommender, chunk_rows: int = 64) -> None:
        self.model = model
        self.chunk_rows = chunk_rows  # users encoded at a time: [rows, L, L] attention stays in cache
        with torch.no_grad():
            self.item_table = model.all_item_vectors()  # [N+1, D]

    @torch.no_grad()
    def __call__(self, batch: EvalBatch) -> torch.Tensor:
        return self.user_vectors(batch).float() @ self.item_table.float().T  # [B, N+1]

    @torch.no_grad()
    def user_vectors(self, batch: EvalBatch) -> torch.Tensor:
        """[B, D] each case's user vector (its scores are these times the item table)."""
        device = self.item_table.device
        items, times, lengths = latest(
            batch.history.to(device), batch.history_timestamps.to(device), batch.lengths.to(device), self.model.max_len
        )
        lengths = lengths.clamp(min=1)  # an empty history scores from padding alone
        query_times, user_ids = batch.target_timestamps.to(device), batch.users.to(device)
        # longest first: a chunk of similar lengths carries little padding (and HSTU's chunked
        # attention skips the rows a query chunk does not reach); rows are put back in order at the end
        order = torch.argsort(lengths, descending=True, stable=True)
        users = []
        for start in range(0, len(lengths), self.chunk_rows):
            rows = order[start : start + self.chunk_rows]
            width = int(lengths[rows].max())  # drop the padding columns this chunk does not use
            users.append(
                self.model.last_user_vectors(
                    items[rows, :width], times[rows, :width], lengths[rows], query_times[rows], user_ids[rows]
                )
            )
        return torch.cat(users)[torch.argsort(order)]  # [B, D]


class GeneratedRankingScorer:
    """Adapts a `GenerativeRecommender` to the evaluator: each user's beams, best first, are the ranking
    (beam items score their log-probability, items sharing a SID tie, all other items -inf)."""

    def __init__(self, model: GenerativeRecommender) -> None:
        self.model = model
        self.tables = model.level_tables()

    @torch.no_grad()
    def __call__(self, batch: EvalBatch) -> torch.Tensor:
        model, device = self.model, self.model.item_tokens.device
        items, _, lengths = latest(
            batch.history.to(device), batch.history_timestamps.to(device), batch.lengths.to(device), model.max_len
        )
        users = batch.users.to(device)
        order = torch.argsort(lengths)  # users with similar history lengths share a pass: less padding
        scores = torch.empty(len(users), model.num_items + 1, device=device)
        step = model.config.eval_users_per_pass
        for start in range(0, len(order), step):
            rows = order[start : start + step]
            beams = model.generate_next(users[rows], items[rows], lengths[rows], self.tables)
            scores[rows] = beams_to_scores(beams, self.tables, model.num_items)
        return scores


def latest(items: torch.Tensor, times: torch.Tensor, lengths: torch.Tensor, max_len: int):  # noqa: ANN201
    """Keep each right-padded row's most recent `max_len` events: [B, L] -> [B, min(L, max_len)]."""
    L = items.shape[1]
    if L <= max_len:
        return items, times, lengths
    start = (lengths - max_len).clamp(min=0)  # [B]
    index = start[:, None] + torch.arange(max_len, device=items.device)[None, :]  # [B, max_len]
    valid = index < lengths[:, None]
    index = index.clamp(max=L - 1)
    return items.gather(1, index) * valid, times.gather(1, index) * valid, lengths.clamp(max=max_len)
