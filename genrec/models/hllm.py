"""HLLM (Chen et al., ByteDance 2024, "Hierarchical Large Language Models for Item and User Modeling").

An item LLM turns each item's text into an embedding; a user model reads the sequence of those
embeddings and produces one user vector per position, scored against the same item embeddings:

    text of item i --item LLM + pooling--> e_i [E] --standardise, project--> v_i [D]
    v_{i1} .. v_{iL} --user model (HSTU or SASRec)--> u_1 .. u_L [D];  score(u, j) = u . v_j

The user model is a genrec HSTU, SASRec or causal LM built with an item tower as its item encoder
(instead of an ID table; HSTU and SASRec scale its vectors by sqrt(D) as they would their table's):
    FrozenTextTower  the catalogue is embedded once (cached on disk); only the projection and the
                     user model train. Fast.
    LLMTextTower     the item LLM runs in the training loop on the unique items of each batch, with
                     LoRA adapters (peft) or full fine-tuning, and gradient checkpointing. Evaluation
                     embeds the catalogue once per evaluation, not once per user batch.
With `model.user.item_features`, the tower's vector is combined with the items' side features
(`FeatureTextTower`: summed, or concatenated and projected), on the input and the scoring side alike.
Both towers standardise each embedding dimension with statistics of the initial catalogue embedding (LLM
hidden states have a few dimensions of huge magnitude that would otherwise swamp the projection).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from genrec.items.llm_embed import TextEncoder, TokenizedTexts, embed_catalogue
from genrec.models.base import SequentialRecommender
from genrec.models.hllm_config import HLLMConfig
from genrec.models.item_encoder import ItemEncoder
from genrec.models.item_features import FeatureTextTower


class Standardise(nn.Module):
    """x -> (x - mean) / std per dimension, with fixed statistics of a catalogue embedding [n, E]."""

    def __init__(self, sample: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", sample.mean(0))
        self.register_buffer("std", sample.std(0).clamp(min=1e-6) if len(sample) > 1 else torch.ones(sample.shape[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FrozenTextTower(ItemEncoder):
    """ids [...] -> [..., D]: precomputed item LLM embeddings [N+1, E], standardised, then projected."""

    def __init__(self, table: torch.Tensor, dim: int) -> None:
        super().__init__()
        self.register_buffer("table", table)  # [N+1, E], row 0 = padding
        self.standardise = Standardise(table[1:])
        self.project = nn.Linear(table.shape[1], dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.standardise(self.table[ids]))


class LLMTextTower(ItemEncoder):
    """ids [...] -> [..., D] through the item LLM itself (trained end to end).

    Training: each call embeds the unique items among `ids` (gradients flow into the LLM); within
    one step (from `start_step` on) an item is run through the LLM once, even when the history
    and the loss's candidates both ask for it. Evaluation (`.eval()`): the whole catalogue is
    embedded once and reused until the tower trains again.
    """

    def __init__(self, encoder: TextEncoder, tokens: TokenizedTexts, pad_id: int, dim: int, batch_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokens = tokens
        self.pad_id = pad_id
        self.batch_size = batch_size
        sample = np.random.default_rng(0).choice(
            np.arange(1, len(tokens)), size=min(256, len(tokens) - 1), replace=False
        )
        with torch.no_grad():
            initial = self._embed(torch.from_numpy(np.sort(sample)))
        self.standardise = Standardise(initial)
        self.project = nn.Linear(encoder.hidden_size, dim)
        self._table: torch.Tensor | None = None
        self.register_load_state_dict_post_hook(self._forget_table)
        self._step_ids: torch.Tensor | None = None  # [S] items embedded in this step, and their vectors [S, D]
        self._step_vectors: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        """[U] unique item ids -> [U, E] LLM embeddings."""
        input_ids, lengths = self.tokens.padded(ids.cpu().numpy(), self.pad_id)
        return self.encoder(input_ids.to(self.device), lengths.to(self.device))

    def train(self, mode: bool = True) -> LLMTextTower:
        if mode:
            self._table = None  # the weights are about to change
        return super().train(mode)

    def _forget_table(self, module: nn.Module, incompatible_keys: object) -> None:
        self._table = None  # new weights were loaded (e.g. the best checkpoint, for the test pass)

    def catalogue(self) -> torch.Tensor:
        """[N+1, D] every item's vector (evaluation; computed once per `.eval()`)."""
        if self._table is None:
            embeddings = embed_catalogue(
                self.encoder, self.tokens, self.pad_id, self.batch_size, self.device, progress=False
            )
            with torch.no_grad():
                self._table = self.project(self.standardise(torch.from_numpy(embeddings).to(self.device)))
        return self._table

    def start_step(self) -> None:
        """Forget the vectors of the previous training step (their weights are about to change)."""
        self._step_ids = self._step_vectors = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.catalogue()[ids]
        unique = torch.unique(ids)
        if self._step_ids is not None:
            unique = unique[~torch.isin(unique, self._step_ids)]
        vectors = self.project(self.standardise(self._embed(unique).float())) if len(unique) else None
        if self._step_ids is None or vectors is not None:
            self._step_ids = unique if self._step_ids is None else torch.cat([self._step_ids, unique])
            self._step_vectors = vectors if self._step_vectors is None else torch.cat([self._step_vectors, vectors])
        order = torch.argsort(self._step_ids)
        rows = order[torch.searchsorted(self._step_ids[order], ids)]
        return self._step_vectors[rows]


class HLLM(SequentialRecommender):
    """A user model (HSTU or SASRec) over item-LLM embeddings; see the module docstring."""

    def __init__(self, config: HLLMConfig, user_model: SequentialRecommender) -> None:
        """user_model: a fresh HSTU / SASRec / causal-LM model whose item encoder is an item tower."""
        super().__init__()
        self.num_items = user_model.num_items
        self.config = config
        self.user_model = user_model
        self.max_len = self.user_model.max_len
        self.normalised = self.user_model.normalised

    @property
    def tower(self) -> ItemEncoder:
        """The item LLM's tower (inside the side-feature combination, when the items have features)."""
        encoder = self.user_model.item_encoder
        return encoder.tower if isinstance(encoder, FeatureTextTower) else encoder

    def encode(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        query_timestamps: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """items: [B, L] right-padded item indices -> [B, L, D] user vectors (see `SequentialRecommender`)."""
        if self.training and isinstance(self.tower, LLMTextTower):
            self.tower.start_step()  # a new batch: the item LLM's weights changed since the last one
        return self.user_model.encode(items, timestamps, lengths, query_timestamps, users)

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return self.user_model.item_vectors(ids)


__all__ = ["HLLM", "FrozenTextTower", "LLMTextTower"]
