"""SID codes as new tokens of a pretrained causal LM's vocabulary (`<a_0>` .. `<c_255>`).

One token per (level, code) is added to the tokenizer in a fixed order, so the same SIDs always
get the same token ids; the new embedding rows (input and, when untied, output) start at the mean
of the existing rows. The tokenizer pads on the left (generation continues after the prompt) and
gets a pad token (its EOS) when it has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genrec.items.semantic_ids import SemanticIds, code_token


@dataclass(frozen=True)
class SIDTokens:
    """The token ids of every item's SID in an extended vocabulary.

    item_tokens: [N+1, L] int64 token ids of item i's SID in row i (row 0, padding, is the pad id)
    new_token_ids: the ids added to the vocabulary, in order
    """

    item_tokens: torch.Tensor
    new_token_ids: list[int]


def sid_vocabulary(codebook_sizes: list[int]) -> list[str]:
    """Every (level, code) token, level by level: ["<a_0>", ..., "<a_255>", "<b_0>", ...]."""
    return [code_token(level, code) for level, size in enumerate(codebook_sizes) for code in range(size)]


def add_sid_tokens(model: nn.Module, tokenizer: Any, sids: SemanticIds) -> SIDTokens:
    """Add the SID tokens to `tokenizer` and `model` (a causal LM), resize and initialise the embeddings.

    Tokens the tokenizer already has (a model saved after extension) are reused, not added twice.
    """
    tokens = sid_vocabulary(sids.codebook_sizes)
    old_size = model.get_input_embeddings().weight.shape[0]
    tokenizer.add_tokens([t for t in tokens if t not in tokenizer.get_vocab()], special_tokens=False)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if len(tokenizer) > old_size:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for table in {
                id(m.weight): m.weight
                for m in (model.get_input_embeddings(), model.get_output_embeddings())
                if m is not None
            }.values():
                table[old_size:] = table[:old_size].mean(dim=0)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    lookup = torch.tensor(ids, dtype=torch.long)
    offsets = torch.tensor([0, *torch.cumsum(torch.tensor(sids.codebook_sizes), 0).tolist()[:-1]])
    codes = torch.from_numpy(sids.codes)
    item_tokens = lookup[(codes.clamp(min=0) + offsets)]  # [N+1, L]
    item_tokens[0] = tokenizer.pad_token_id
    return SIDTokens(item_tokens, [i for i in ids if i >= old_size])
