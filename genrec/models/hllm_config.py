"""The config of HLLM (`genrec.models.hllm`): the item LLM and the user model; torch-free, as every
model config."""

from __future__ import annotations

from dataclasses import dataclass, field

from genrec.errors import ConfigError
from genrec.items.text import HLLM_PROMPT, Pooling, TextTemplate
from genrec.models.base_config import FeatureOptions, LLMTuning, ModelConfig
from genrec.models.hstu_config import HSTUConfig

# the models HLLM's user model can be (model names of `genrec.models.registry`)
USER_MODELS = ("hstu", "sasrec", "llm")


@dataclass
class ItemLLMConfig(LLMTuning):
    """The item LLM: which model, how item text is written and pooled, and how (if at all) it trains."""

    path: str = ""  # a local Hugging Face model directory, or python:PACKAGE for a pip-installed model
    gguf_file: str | None = None  # a GGUF file in that directory (found automatically when it is the only one)
    pooling: Pooling = "last"  # last | mean | item-token
    item_tokens: int = 1  # learnable tokens appended after the text (pooling=item-token)
    max_tokens: int = 256  # token limit per item text (the model's context, if smaller, wins)
    prompt: str = HLLM_PROMPT
    fields: list[str] = field(default_factory=list)  # item fields in the text; empty = all of the dataset's
    separator: str = ""  # between `field: value` pairs (HLLM writes none)
    batch_size: int = 32  # items per forward pass when embedding the catalogue
    # train (frozen: embed once and cache | lora | full: end to end), lora_rank, lora_alpha,
    # lora_dropout, lora_targets, gradient_checkpointing: see `LLMTuning`

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.batch_size < 1 or self.item_tokens < 1:
            raise ConfigError("model.item_llm.max_tokens, batch_size and item_tokens must be >= 1")
        if self.pooling not in ("last", "mean", "item-token"):
            raise ConfigError(
                f"model.item_llm.pooling: expected one of 'last' | 'mean' | 'item-token', got {self.pooling!r}"
            )

    def template(self) -> TextTemplate:
        return TextTemplate(prompt=self.prompt, fields=list(self.fields), separator=self.separator)


@dataclass
class HLLMConfig(ModelConfig):
    name: str = "hllm"
    item_llm: ItemLLMConfig = field(default_factory=ItemLLMConfig)
    # the user model over item embeddings: an hstu, sasrec or llm (a causal LM, HLLM's user LLM)
    # model config; its max_len is HLLM's history length
    user: ModelConfig = field(default_factory=lambda: HSTUConfig(max_len=50, dim=64, attention_dim=64, value_dim=64))

    def __post_init__(self) -> None:
        if self.user.name not in USER_MODELS:
            raise ConfigError(
                f"model.user.name: HLLM's user model must be one of {', '.join(USER_MODELS)}, got {self.user.name!r}"
            )
        user = self.user
        if isinstance(user, FeatureOptions):
            if not user.item_id or user.id_min_count or user.id_dropout:
                raise ConfigError(
                    "model.user.item_id / id_min_count / id_dropout: HLLM's items have no id vector (their item "
                    "LLM's embedding takes its place); name side features in model.user.item_features"
                )

    @property
    def end_to_end(self) -> bool:
        return self.item_llm.train != "frozen"

    @property
    def uses_time(self) -> bool:
        return self.user.uses_time

    @property
    def fits_features(self) -> bool:
        """Whether the item LLM's embeddings are combined with the items' side features
        (model.user.item_features), fitted on the training events."""
        return self.user.fits_features
