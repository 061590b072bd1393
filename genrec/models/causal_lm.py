"""A pretrained Hugging Face causal LM as the sequential model (HLLM's user LLM).

Each history item becomes one input vector (`inputs_embeds`), so the LM reads a user's history as
a sequence of item "tokens" and its last hidden state at position t is the user vector after
t+1 items:
    items [B, L] --item_encoder--> [B, L, H] --LLM(inputs_embeds, causal)--> [B, L, H] --L2 norm--> users
Item vectors are the L2-normalised item encoder's vectors, so scores are cosines (as in HLLM). On its
own the item encoder is an ID table of the LLM's width; inside HLLM it is the item-LLM tower.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genrec.models.base import SequentialRecommender
from genrec.models.causal_lm_config import CausalLMConfig
from genrec.models.item_encoder import IDEmbedding, ItemEncoder
from genrec.models.llm_tuning import prepare_for_training


class CausalLMRecommender(SequentialRecommender):
    normalised = True

    def __init__(
        self, num_items: int, config: CausalLMConfig, llm: nn.Module, item_encoder: ItemEncoder | None = None
    ) -> None:
        """llm: the pretrained model, without its LM head (`genrec.models.build.load_causal_lm`); item_encoder: ids [...] -> [..., the LLM's width],
        initialised (default: an ID table)."""
        super().__init__()
        self.num_items = num_items
        self.max_len = config.max_len
        self.config = config
        self.hidden_size: int = llm.config.hidden_size
        self.llm = prepare_for_training(llm, config, "model")
        table = IDEmbedding(num_items, self.hidden_size) if item_encoder is None else None
        if table is not None:  # a given encoder keeps its weights
            nn.init.normal_(table.weight, std=0.02)
            with torch.no_grad():
                table.weight[0].zero_()
        self.item_encoder = item_encoder if table is None else table

    @property
    def dim(self) -> int:
        return self.hidden_size

    def encode(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        query_timestamps: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """items: [B, L] right-padded -> [B, L, H] L2-normalised user vectors (times are not used)."""
        if items.shape[1] > self.max_len:
            raise ValueError(f"sequence length {items.shape[1]} exceeds max_len {self.max_len}")
        inputs = self.item_encoder(items)  # [B, L, H]
        hidden = self.llm(inputs_embeds=inputs, attention_mask=(items != 0).long()).last_hidden_state
        return F.normalize(hidden.float(), dim=-1, eps=1e-6)

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.item_encoder(ids).float(), dim=-1, eps=1e-6)
