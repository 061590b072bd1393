"""The SID LLM's builder (see `genrec.models.build`): its semantic IDs, pretrained causal LM and
item titles, read for a dataset and passed to `SIDLLM`."""

from __future__ import annotations

import torch

from genrec.data.dataset import Dataset
from genrec.errors import ConfigError
from genrec.items.llm_embed import load_text_model, resolve_model_path
from genrec.items.semantic_ids import semantic_ids_for
from genrec.llm.sid_llm import SIDLLM
from genrec.llm.sid_llm_config import SIDLLMConfig
from genrec.models.base_config import ModelConfig


def build_sid_llm(
    dataset: Dataset, config: ModelConfig, device: torch.device | None = None, progress: bool = True
) -> SIDLLM:
    """The SID LLM over the SIDs `config.sid_file` names (else the dataset's), the causal LM `config.path`
    names and the dataset's item titles."""
    assert isinstance(config, SIDLLMConfig)
    sids = semantic_ids_for(dataset, config.sid_file)
    llm, tokenizer = load_text_model(resolve_model_path(config.path, config.gguf_file), causal_lm_head=True)
    needed = len(config.tasks) > 1 or config.prompts.with_titles
    return SIDLLM(config, sids, llm, tokenizer, item_titles(dataset, config.prompts.title_field, needed))


def item_titles(dataset: Dataset, column: str, needed: bool) -> list[str]:
    """[N+1] each item's `column` ("" when missing); `needed`: a dataset without the column is an error."""
    names = dataset.items.schema.names
    if column not in names:
        if needed:
            raise ConfigError(
                f"the prompts use item titles but the dataset has no {column!r} item field "
                f"(fields: {', '.join(names)}); set model.prompts.title_field"
            )
        return [""] * (dataset.num_items + 1)
    titles = [""] * (dataset.num_items + 1)
    for item, title in zip(dataset.items["item"].to_pylist(), dataset.items[column].to_pylist()):
        titles[item] = title or ""
    return titles
