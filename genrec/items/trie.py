"""A prefix trie over the valid semantic IDs, for constrained generation.

Generation may only follow token sequences that spell a real item's SID, so every finished beam is
an item. The trie works on token ids (a TIGER vocabulary or an LLM tokenizer's ids for `<a_12>`,
...) and plugs into `transformers`' `generate` as `prefix_allowed_tokens_fn`; the same lookup is
used by genrec's own beam search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from genrec.errors import DataError


class SIDTrie:
    """sequences[i]: the token ids of item items[i]'s SID (all of the same length)."""

    def __init__(self, sequences: Sequence[Sequence[int]], items: Sequence[int]) -> None:
        if len(sequences) != len(items):
            raise DataError(f"SID trie: {len(sequences)} token sequences for {len(items)} items")
        lengths = {len(s) for s in sequences}
        if len(lengths) > 1:
            raise DataError(f"SID trie: token sequences of different lengths {sorted(lengths)}")
        self.depth = lengths.pop() if lengths else 0
        self._children: dict[tuple[int, ...], set[int]] = {}
        self._items: dict[tuple[int, ...], list[int]] = {}
        for sequence, item in zip(sequences, items):
            key = tuple(int(t) for t in sequence)
            for end in range(len(key)):
                self._children.setdefault(key[:end], set()).add(key[end])
            self._items.setdefault(key, []).append(int(item))
        self._sorted = {prefix: sorted(tokens) for prefix, tokens in self._children.items()}

    def __len__(self) -> int:
        return len(self._items)  # distinct SIDs

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Token ids that may follow `prefix` (empty when the prefix is complete or invalid)."""
        return self._sorted.get(tuple(int(t) for t in prefix), [])

    def items(self, sid: Sequence[int]) -> list[int]:
        """The items whose SID is `sid` (several when SIDs collide; empty when it is not an SID)."""
        return self._items.get(tuple(int(t) for t in sid), [])

    def prefix_allowed_tokens_fn(self, prompt_length: int, end_token: int) -> Callable[[int, torch.Tensor], list[int]]:
        """For `transformers` `generate(..., prefix_allowed_tokens_fn=...)`: inputs are [prompt, generated
        tokens]; after a whole SID only `end_token` (eos) may follow, so every finished beam is an item."""

        def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
            generated = input_ids[prompt_length:].tolist()
            if len(generated) >= self.depth:
                return [end_token]
            return self.allowed(generated) or [end_token]

        return allowed
