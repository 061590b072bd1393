"""The prompts of the SID LLM recommender as token ids (the templates and the tasks are `PromptConfig`
and `Task`, in `genrec.llm.sid_llm_config`).

A template has one placeholder (`{history}`, `{title}` or `{sid}`); the text around it is tokenised
once, and so is each item's piece, so a prompt is a concatenation of cached token ids, and a prompt
longer than the limit drops its oldest history items (counted) instead of being cut mid-item.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from genrec.llm.sid_llm_config import PromptConfig, Task

log = logging.getLogger("genrec.llm")


def _split(template: str, slot: str) -> tuple[str, str]:
    before, after = template.split(slot)
    return before, after


@dataclass
class PromptBuilder:
    """Token ids of prompts and answers for a tokenizer, an item SID token table and item titles."""

    config: PromptConfig
    tokenizer: Any
    item_tokens: torch.Tensor  # [N+1, L] SID token ids per item
    titles: list[str]  # [N+1] item titles ("" when unknown; index 0 unused)
    max_prompt_tokens: int
    truncated_items: int = 0  # history items dropped to fit max_prompt_tokens, since creation
    _cache: dict[Any, list[int]] = field(default_factory=dict)

    def _ids(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self._cache[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def sid_ids(self, item: int) -> list[int]:
        return self.item_tokens[item].tolist()

    def title_ids(self, item: int) -> list[int]:
        return self._ids(self.titles[item])

    def _history_piece(self, item: int, task: Task) -> list[int]:
        if task == "titles-to-next":
            return self._ids(f'"{self.titles[item]}"')
        if self.config.with_titles:
            return self.sid_ids(item) + self._ids(f' "{self.titles[item]}"')
        return self.sid_ids(item)

    def history_prompt(self, history: list[int], task: Task = "next-item") -> list[int]:
        """The prompt for a history (item indices, oldest first), dropping the oldest items that do not fit."""
        template = self.config.next_item if task == "next-item" else self.config.titles_to_next
        before, after = (self._ids(part) for part in _split(template, "{history}"))
        separator = self._ids(self.config.separator)
        pieces = [self._history_piece(item, task) for item in history]
        budget = self.max_prompt_tokens - len(before) - len(after)
        total = sum(len(p) for p in pieces) + len(separator) * max(len(pieces) - 1, 0)
        start = 0
        while total > budget and start < len(pieces) - 1:  # keep at least the latest item
            total -= len(pieces[start]) + len(separator)
            start += 1
        if start and not self.truncated_items:
            log.warning(
                "a prompt is longer than %d tokens: its oldest history items are dropped (the running count is "
                "logged at each evaluation)",
                self.max_prompt_tokens,
            )
        self.truncated_items += start
        body: list[int] = []
        for i, piece in enumerate(pieces[start:]):
            body += (separator if i else []) + piece
        return before + body + after

    def item_prompt(self, item: int, task: Task) -> list[int]:
        """The prompt of an alignment task about one item (`title-to-sid` or `sid-to-title`)."""
        if task == "title-to-sid":
            before, after = _split(self.config.title_to_sid, "{title}")
            return self._ids(before) + self.title_ids(item) + self._ids(after)
        before, after = _split(self.config.sid_to_title, "{sid}")
        return self._ids(before) + self.sid_ids(item) + self._ids(after)

    def answer(self, item: int, task: Task) -> list[int]:
        """The answer tokens: the item's SID, or its title then EOS for `sid-to-title`."""
        if task == "sid-to-title":
            return self.title_ids(item) + [self.tokenizer.eos_token_id]
        return self.sid_ids(item)


def left_padded(
    prompts: list[list[int]], answers: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch prompt + answer token lists, padded on the left.

    Returns (input_ids [E, T], attention_mask [E, T], labels [E, T]); labels are -100 everywhere but
    on the answer tokens, so the loss is on the answers only.
    """
    rows = [p + a for p, a in zip(prompts, answers)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (row, answer) in enumerate(zip(rows, answers)):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
        if answer:
            labels[i, width - len(answer) :] = torch.tensor(answer, dtype=torch.long)
    return ids, mask, labels
