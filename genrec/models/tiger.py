"""TIGER (Rajput et al., NeurIPS 2023, "Recommender Systems with Generative Retrieval").

Each item is its semantic ID, a short tuple of codes (`genrec.items.semantic_ids`). An
encoder-decoder transformer (a T5 built from a `transformers` config and trained from scratch)
reads a user token and the SIDs of the latest `max_len` history items, and generates the next
item's SID one code at a time. Recommendations come from a beam search constrained by the trie of
valid SIDs, so every beam is a real item; the beams, best first, are the ranking.

Vocabulary (`SIDVocabulary`): 0 = padding (also the decoder's start token), 1 = end of the
encoder input, then `user_tokens` user-hash tokens, then one token per (level, code).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from genrec.items.beam_search import Beams, constrained_beam_search
from genrec.items.semantic_ids import SemanticIds
from genrec.items.trie import LevelTables
from genrec.models.base import GenerativeRecommender
from genrec.models.tiger_config import TIGERConfig
from genrec.optional import require

if TYPE_CHECKING:
    from genrec.data.batching import SequenceBatch

log = logging.getLogger("genrec.models")


@dataclass(frozen=True)
class SIDVocabulary:
    """Token ids of TIGER's vocabulary."""

    codebook_sizes: tuple[int, ...]
    user_tokens: int
    PAD = 0  # also the decoder's start token, as in T5
    EOS = 1

    @property
    def level_offsets(self) -> np.ndarray:
        """[L] the token id of code 0 at each level."""
        return 2 + self.user_tokens + np.concatenate([[0], np.cumsum(self.codebook_sizes)[:-1]]).astype(np.int64)

    @property
    def size(self) -> int:
        return 2 + self.user_tokens + sum(self.codebook_sizes)

    def item_tokens(self, codes: np.ndarray) -> torch.Tensor:
        """codes [N+1, L] (row 0 padding) -> [N+1, L] token ids (row 0 all PAD)."""
        tokens = torch.from_numpy(codes + self.level_offsets[None, :])
        tokens[0] = self.PAD
        return tokens

    def user_token(self, users: torch.Tensor) -> torch.Tensor:
        """[B] user indices -> [B] token ids (TIGER hashes user ids into a fixed number of tokens)."""
        return 2 + users % self.user_tokens


class TIGER(GenerativeRecommender):
    config: TIGERConfig

    def __init__(self, sids: SemanticIds, config: TIGERConfig) -> None:
        super().__init__()
        transformers = require("transformers")

        if sids.collisions():
            log.warning(
                "%d items share a semantic ID with another item: the beam search cannot tell them apart "
                "(they tie in the ranking)",
                sids.collisions(),
            )
        self.config = config
        self.num_items, self.max_len, self.train_len = sids.num_items, config.max_len, config.train_len
        self.vocab = SIDVocabulary(tuple(sids.codebook_sizes), max(config.user_tokens, 1))
        self.num_levels = sids.num_levels
        # saved with the weights: a checkpoint is only valid with the SIDs it was trained on
        self.register_buffer("item_tokens", self.vocab.item_tokens(sids.codes))  # [N+1, L]
        t5 = transformers.T5Config(
            vocab_size=self.vocab.size,
            d_model=config.dim,
            d_kv=config.head_dim,
            d_ff=config.ffn_dim,
            num_layers=config.num_layers,
            num_decoder_layers=config.num_layers,
            num_heads=config.num_heads,
            dropout_rate=config.dropout,
            feed_forward_proj="relu",
            pad_token_id=SIDVocabulary.PAD,
            eos_token_id=SIDVocabulary.EOS,
            decoder_start_token_id=SIDVocabulary.PAD,
        )
        self.t5 = transformers.T5ForConditionalGeneration(t5)

    # ---- the encoder input ------------------------------------------------------------------------
    def encoder_inputs(
        self, users: torch.Tensor, history: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[user token, the history's SID tokens oldest first, EOS], right-padded.

        users: [E]; history: [E, H] right-padded item indices; lengths: [E] (0 is allowed).
        Returns (input_ids [E, S], attention_mask [E, S]), S = 2 + max(lengths) * L (1 + ... without
        user tokens).
        """
        E, L = history.shape[0], self.num_levels
        width = int(lengths.max()) if E else 0
        tokens = self.item_tokens[history[:, :width]].reshape(E, width * L)  # padding items give PAD
        lead = [self.vocab.user_token(users)[:, None]] if self.config.user_tokens else []
        ids = torch.cat([*lead, tokens, torch.zeros_like(tokens[:, :1])], dim=1)
        columns = torch.arange(ids.shape[1], device=history.device)[None, :]
        end = len(lead) + lengths[:, None] * L  # [E, 1] the EOS column
        ids = torch.where(columns == end, SIDVocabulary.EOS, ids)
        return ids, (columns <= end).long()

    # ---- training ---------------------------------------------------------------------------------
    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """Summed negative log-likelihood of each target's SID given its history (teacher forcing)."""
        examples = batch.next_item_examples(self.max_len)
        ids, mask = self.encoder_inputs(examples.users, examples.history, examples.lengths)
        targets = self.item_tokens[examples.targets]  # [E, L]
        decoder_input = torch.cat([torch.zeros_like(targets[:, :1]), targets[:, :-1]], dim=1)  # shifted right
        logits = self.t5(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_input).logits  # [E, L, V]
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")

    # ---- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_next(
        self,
        users: torch.Tensor,
        history: torch.Tensor,
        lengths: torch.Tensor,
        tables: LevelTables,
        num_beams: int | None = None,
    ) -> Beams:
        """Constrained beam search for B users: `Beams` with leaves [B, K] of `tables`, best first."""
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache
        from transformers.modeling_outputs import BaseModelOutput

        ids, mask = self.encoder_inputs(users, history, lengths)
        states = self.t5.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, S, D]
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        rows = {"states": states, "mask": mask}

        def step(tokens: torch.Tensor | None, parents: torch.Tensor | None) -> torch.Tensor:
            if tokens is None:
                decoder_input = torch.zeros(len(users), 1, dtype=torch.long, device=ids.device)
            else:  # continue each beam from its parent row: the cache follows the beams
                cache.reorder_cache(parents)
                rows["states"], rows["mask"] = rows["states"][parents], rows["mask"][parents]
                decoder_input = tokens[:, None]
            out = self.t5(
                encoder_outputs=BaseModelOutput(last_hidden_state=rows["states"]),
                attention_mask=rows["mask"],
                decoder_input_ids=decoder_input,
                past_key_values=cache,
                use_cache=True,
            )
            return out.logits[:, -1].float().log_softmax(-1)

        return constrained_beam_search(step, tables, len(users), num_beams or self.config.num_beams)
