"""Item encoders: item indices -> item vectors, the one way a sequential model sees items.

A sequential model reads its history through its `item_encoder` and scores candidates with the
same encoder, so whatever represents an item (a learned ID table here, HLLM's item LLM over the
item's text, side features) serves the input side and the scoring side alike. The model's builder
chooses the encoder; a model without one given learns an `IDEmbedding`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class ItemEncoder(nn.Module, ABC):
    """ids [...] int64 item indices -> [..., D] item vectors (index 0 = padding)."""

    @abstractmethod
    def forward(self, ids: torch.Tensor) -> torch.Tensor: ...


class IDEmbedding(nn.Embedding, ItemEncoder):
    """One learned vector per item: a [N+1, D] table whose row 0 (padding) starts at zero and gets no
    gradient. The model initialises the rows (each model its own way)."""

    def __init__(self, num_items: int, dim: int) -> None:
        super().__init__(num_items + 1, dim, padding_idx=0)
