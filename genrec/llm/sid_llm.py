"""A pretrained causal LM that recommends by writing the next item's semantic ID (MiniOneRec-style).

The SID codes become new tokens (`genrec.llm.sid_tokens`); a prompt lists the history's SIDs
(`genrec.llm.prompts`) and the model is fine-tuned to answer with the next item's SID (loss on the
answer tokens only), optionally with MiniOneRec's alignment tasks (title <-> SID, titles -> next
SID) built for each batch's target items. Recommendations come from the trie-constrained beam
search shared with TIGER, driven here by the LM with its key/value cache; `transformers`'
`generate` is never called, so a model's `generation_config` (sampling, temperature, top_p) cannot
change the search. The beams, best first, are the ranking for the shared evaluator.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from genrec.eval.evaluator import Scorer
from genrec.items.beam_search import Beams, constrained_beam_search
from genrec.items.llm_embed import context_length
from genrec.items.semantic_ids import SemanticIds
from genrec.items.trie import LevelTables
from genrec.llm.prompts import PromptBuilder, left_padded
from genrec.llm.sid_llm_config import SIDLLMConfig
from genrec.llm.sid_tokens import add_sid_tokens
from genrec.models.base import GenerativeRecommender
from genrec.models.llm_tuning import prepare_for_training

if TYPE_CHECKING:
    from genrec.data.batching import SequenceBatch

log = logging.getLogger("genrec.llm")


class SIDLLM(GenerativeRecommender):
    config: SIDLLMConfig

    def __init__(
        self, config: SIDLLMConfig, sids: SemanticIds, llm: nn.Module, tokenizer: Any, titles: list[str]
    ) -> None:
        """sids: every item's semantic ID; llm, tokenizer: the pretrained causal LM (with its LM head)
        and its tokenizer, which gain one token per SID code; titles: [N+1] item titles for the
        prompts ("" when unknown). `genrec.llm.build.build_sid_llm` reads them for a dataset."""
        super().__init__()
        self.config = config
        if sids.collisions():
            log.warning("%d items share a semantic ID with another item: they tie in the ranking", sids.collisions())
        self.num_items, self.max_len, self.train_len = sids.num_items, config.max_len, config.train_len
        extended = add_sid_tokens(llm, tokenizer, sids)
        self.tokenizer = tokenizer
        self.register_buffer("item_tokens", extended.item_tokens)  # [N+1, L]; a checkpoint must match it
        limit = min(config.max_prompt_tokens, (context_length(llm) or 10**9) - sids.num_levels - 1)
        self.prompts = PromptBuilder(config.prompts, tokenizer, extended.item_tokens, titles, limit)
        self.llm = prepare_for_training(llm, config, "model", new_tokens=extended.new_token_ids)

    # ---- training ---------------------------------------------------------------------------------
    def answer_logprobs(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[E, T] log-probability of each label token (0 where labels are -100), from one forward pass.

        With left padding the answers end every row, so the LM head runs on the last columns only
        (from the column before the first label): the prompt positions never build [E, T, vocab] logits.
        """
        E, T = labels.shape
        labelled = (labels != -100).any(dim=0).nonzero()
        first = max(int(labelled[0]), 1) if len(labelled) else T  # the first column that holds a label
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens count from 0
        out = self.llm(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=T - first + 1)
        logits = out.logits[:, :-1]  # [E, T - first, V]: column j predicts the token of column first + j
        targets = labels[:, first:]
        keep = targets != -100
        logp = torch.zeros(E, T, device=ids.device)
        logp[:, first:][keep] = -F.cross_entropy(logits[keep].float(), targets[keep], reduction="none")
        return logp

    def task_examples(self, batch: SequenceBatch) -> tuple[list[list[int]], list[list[int]]]:
        """(prompts, answers) token lists: one next-item example per target, plus the alignment tasks
        for the batch's distinct target items."""
        examples = batch.next_item_examples(self.max_len)
        histories = [h[:n].tolist() for h, n in zip(examples.history.cpu(), examples.lengths.cpu())]
        targets = examples.targets.tolist()
        prompts = [self.prompts.history_prompt(h) for h in histories]
        answers = [self.prompts.answer(t, "next-item") for t in targets]
        for task in self.config.tasks[1:]:
            if task == "titles-to-next":
                prompts += [self.prompts.history_prompt(h, "titles-to-next") for h in histories]
                answers += [self.prompts.answer(t, "next-item") for t in targets]
            else:
                for item in sorted(set(targets)):
                    prompts.append(self.prompts.item_prompt(item, task))  # type: ignore[arg-type]
                    answers.append(self.prompts.answer(item, task))  # type: ignore[arg-type]
        return prompts, answers

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """Summed negative log-likelihood of the answers (teacher forcing; the prompts carry no loss)."""
        prompts, answers = self.task_examples(batch)
        ids, mask, labels = left_padded(prompts, answers, self.tokenizer.pad_token_id)
        device = self.item_tokens.device
        return -self.answer_logprobs(ids.to(device), mask.to(device), labels.to(device)).sum()

    # ---- generation -------------------------------------------------------------------------------
    def history_prompts(self, history: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and mask [B, T] for right-padded histories [B, H]."""
        prompts = [self.prompts.history_prompt(h[:n].tolist()) for h, n in zip(history.cpu(), lengths.cpu())]
        ids, mask, _ = left_padded(prompts, [[] for _ in prompts], self.tokenizer.pad_token_id)
        return ids.to(self.item_tokens.device), mask.to(self.item_tokens.device)

    @torch.no_grad()
    def generate(
        self, ids: torch.Tensor, mask: torch.Tensor, tables: LevelTables, num_beams: int | None = None
    ) -> Beams:
        """Constrained beam search after left-padded prompts ids/mask [B, T]: `Beams`, best first."""
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()
        state = {"mask": mask, "next": mask.sum(-1)}  # [R, t] attention, [R] position of the next token

        def step(tokens: torch.Tensor | None, parents: torch.Tensor | None) -> torch.Tensor:
            if tokens is None:
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                out = self.llm(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
            else:  # each beam continues its parent row: reorder the cache, append the new token
                cache.reorder_cache(parents)
                grown = torch.cat([state["mask"][parents], torch.ones_like(tokens)[:, None]], dim=1)
                position = state["next"][parents]
                state["mask"], state["next"] = grown, position + 1
                out = self.llm(
                    input_ids=tokens[:, None],
                    attention_mask=grown,
                    position_ids=position[:, None],
                    past_key_values=cache,
                    use_cache=True,
                )
            return out.logits[:, -1].float().log_softmax(-1)

        return constrained_beam_search(step, tables, len(ids), num_beams or self.config.num_beams)

    def generate_next(
        self,
        users: torch.Tensor,
        history: torch.Tensor,
        lengths: torch.Tensor,
        tables: LevelTables,
        num_beams: int | None = None,
    ) -> Beams:
        """The beam search after each history's prompt (`users` is unused: the prompt names no user)."""
        ids, mask = self.history_prompts(history, lengths)
        return self.generate(ids, mask, tables, num_beams)

    def scorer(self) -> Scorer:
        if self.prompts.truncated_items:
            log.info(
                "%d history items dropped so far to fit prompts into %d tokens",
                self.prompts.truncated_items,
                self.prompts.max_prompt_tokens,
            )
        return super().scorer()
