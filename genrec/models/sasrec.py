"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018).

Item embedding scaled by sqrt(D) plus a learned position embedding, then blocks of causal softmax
self-attention and a point-wise feed-forward network, as in the authors' code: the attention
residual is added to the layer-normalised query. Items are scored by a dot product with the
shared item embedding (optionally both sides L2-normalised, as in generative-recommenders). The
item embedding is the model's item encoder: an ID table unless another encoder is given (HLLM's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genrec.models.base import SequentialRecommender
from genrec.models.dropout import Dropout
from genrec.models.item_encoder import IDEmbedding, ItemEncoder
from genrec.models.layers import CausalSelfAttention, PointWiseFeedForward, padding_mask, scaled_inputs
from genrec.models.sasrec_config import SASRecConfig
from genrec.models.user_features import UserFeaturePrefix, prepend, user_tokens


class SASRecBlock(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.dim, eps=1e-8)
        self.attention = CausalSelfAttention(config.dim, config.num_heads, config.dropout)
        self.ffn_norm = nn.LayerNorm(config.dim, eps=1e-8)
        self.ffn = PointWiseFeedForward(config.dim, config.ffn_dim or config.dim, config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, L, D], mask: [B, L, 1] -> [B, L, D]."""
        query = self.attention_norm(x)
        x = query + self.attention(query, x)
        x = self.ffn_norm(x)
        return (x + self.ffn(x)) * mask


class SASRec(SequentialRecommender):
    def __init__(
        self,
        num_items: int,
        config: SASRecConfig,
        item_encoder: ItemEncoder | None = None,
        user_prefix: UserFeaturePrefix | None = None,
    ) -> None:
        """item_encoder: ids [...] -> [..., config.dim], initialised (default: an ID table);
        user_prefix: users [B] -> [B, P, config.dim] tokens put before the history (default: none)."""
        super().__init__()
        self.num_items = num_items
        self.max_len = config.max_len
        self.config = config
        self.normalised = config.l2_norm
        self.item_encoder = IDEmbedding(num_items, config.dim) if item_encoder is None else item_encoder
        self.position_embedding = nn.Embedding(config.max_len, config.dim)
        self.dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.num_blocks))
        self.final_norm = nn.LayerNorm(config.dim, eps=1e-8)
        for module in self.children():
            if module is not item_encoder:  # a given encoder keeps its weights (HLLM's holds an LLM)
                module.apply(self._init_weights)
        self.user_prefix = user_prefix  # registered after the init: it keeps its own

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.xavier_normal_(module.weight)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def encode(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        query_timestamps: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """items: [B, L] right-padded (L <= max_len) -> [B, L, D] (times are not used).

        users: [B] user indices, read when the model has user features: their P prefix tokens come
        before the history (every position attends to them; the history keeps positions 0..L-1).
        """
        B, L = items.shape
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds max_len {self.max_len}")
        mask = padding_mask(items)  # [B, L, 1]
        x = scaled_inputs(self.item_encoder(items), self.position_embedding, self.dropout, mask)
        x, mask = prepend(user_tokens(self.user_prefix, users, items, self.dropout), x, mask)  # [B, P+L, ...]
        for block in self.blocks:
            x = block(x, mask)
        x = self.final_norm(x[:, x.shape[1] - L :])  # the history's positions
        return F.normalize(x, dim=-1) if self.config.l2_norm else x

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        vectors = self.item_encoder(ids)
        return F.normalize(vectors, dim=-1) if self.config.l2_norm else vectors
