"""The config of the causal-LM user model (`genrec.models.causal_lm`); torch-free, as every model config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from genrec.errors import ConfigError
from genrec.models.base_config import LLMTuning, ModelConfig


@dataclass
class CausalLMConfig(ModelConfig, LLMTuning):
    name: str = "llm"
    path: str = ""  # a local Hugging Face model directory, or python:PACKAGE
    gguf_file: str | None = None
    max_len: int = 50
    train: Literal["frozen", "lora", "full"] = "full"  # HLLM fine-tunes its user LLM fully

    def __post_init__(self) -> None:
        if self.max_len < 1:
            raise ConfigError(f"model.max_len must be >= 1, got {self.max_len}")
