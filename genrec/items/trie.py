"""A prefix trie over the valid semantic IDs, for constrained generation.

Generation may only follow token sequences that spell a real item's SID, so every finished beam is
an item. The trie works on token ids (a TIGER vocabulary or an LLM tokenizer's ids for `<a_12>`,
...) and plugs into `transformers`' `generate` as `prefix_allowed_tokens_fn`; the same lookup is
used by genrec's own beam search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from genrec.errors import DataError


@dataclass(frozen=True)
class LevelTables:
    """The trie as dense tables, for a beam search that expands every beam in one tensor operation.

    tokens[l]:   [T_l] int64 the token ids that occur at level l
    children[l]: [nodes_l, T_l] int64 the node of level l+1 reached from node n of level l by token
                 tokens[l][j], -1 where that is no SID's prefix. Level 0 has one node (the empty
                 prefix); the nodes after the last level are the distinct SIDs (leaves).
    leaf_items:  [leaves, M] int64 the items of each SID, padded with 0 (M > 1 only when SIDs collide)
    """

    tokens: list[torch.Tensor]
    children: list[torch.Tensor]
    leaf_items: torch.Tensor

    @property
    def depth(self) -> int:
        return len(self.tokens)

    def to(self, device: torch.device | str) -> LevelTables:
        return LevelTables(
            [t.to(device) for t in self.tokens], [c.to(device) for c in self.children], self.leaf_items.to(device)
        )


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

    def level_tables(self) -> LevelTables:
        """The trie as `LevelTables` (built in one pass over its prefixes)."""
        nodes: dict[tuple[int, ...], int] = {(): 0}  # the prefixes of the current level -> node id
        tokens, children = [], []
        for _ in range(self.depth):
            level_tokens = sorted({t for prefix in nodes for t in self._sorted[prefix]})
            column = {t: j for j, t in enumerate(level_tokens)}
            table = torch.full((len(nodes), len(level_tokens)), -1, dtype=torch.long)
            next_nodes: dict[tuple[int, ...], int] = {}
            for prefix, node in nodes.items():
                for t in self._sorted[prefix]:
                    table[node, column[t]] = next_nodes.setdefault((*prefix, t), len(next_nodes))
            tokens.append(torch.tensor(level_tokens, dtype=torch.long))
            children.append(table)
            nodes = next_nodes
        width = max((len(v) for v in self._items.values()), default=1)
        leaf_items = torch.zeros(len(nodes), width, dtype=torch.long)
        for sid, leaf in nodes.items():
            members = self._items[sid]
            leaf_items[leaf, : len(members)] = torch.tensor(members)
        return LevelTables(tokens, children, leaf_items)

    def prefix_allowed_tokens_fn(self, prompt_length: int, end_token: int) -> Callable[[int, torch.Tensor], list[int]]:
        """For `transformers` `generate(..., prefix_allowed_tokens_fn=...)`: inputs are [prompt, generated
        tokens]; after a whole SID only `end_token` (eos) may follow, so every finished beam is an item."""

        def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
            generated = input_ids[prompt_length:].tolist()
            if len(generated) >= self.depth:
                return [end_token]
            return self.allowed(generated) or [end_token]

        return allowed
