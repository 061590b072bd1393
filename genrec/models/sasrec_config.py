"""The config of SASRec (`genrec.models.sasrec`); torch-free, as every model config."""

from __future__ import annotations

from dataclasses import dataclass

from genrec.errors import ConfigError
from genrec.models.base_config import FeatureOptions, ModelConfig


@dataclass
class SASRecConfig(FeatureOptions, ModelConfig):
    name: str = "sasrec"
    max_len: int = 200  # longest history the model reads (older items are dropped)
    dim: int = 50  # item embedding and hidden size
    num_blocks: int = 2
    num_heads: int = 1
    ffn_dim: int | None = None  # default: dim
    dropout: float = 0.2
    l2_norm: bool = False  # L2-normalise user and item vectors (use with a temperature in the loss)

    def __post_init__(self) -> None:
        self.check_item_features()
        if self.max_len < 1:
            raise ConfigError(f"model.max_len must be >= 1, got {self.max_len}")
        if self.dim < 1 or self.num_blocks < 0 or self.num_heads < 1 or self.dim % self.num_heads:
            raise ConfigError(
                f"model.dim ({self.dim}) must be a positive multiple of model.num_heads ({self.num_heads})"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
