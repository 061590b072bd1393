"""The config of HSTU (`genrec.models.hstu`); torch-free, as every model config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from genrec.errors import ConfigError
from genrec.models.base_config import FeatureOptions, ModelConfig

# the attention kernels of `genrec.models.hstu_attention`: reference = plain PyTorch, readable, runs
# everywhere; chunked = the same values a chunk of query positions at a time, without the masked and
# padded cells; compiled = the reference through torch.compile (fused elementwise ops);
# auto = chunked on a CPU, the reference elsewhere
HSTUKernel = Literal["auto", "reference", "chunked", "compiled"]
# where the per-token work of a block (layer norms, projections, SiLU, gates, dropout) runs: padded =
# on the [B, L] batch, padding included; packed = on the real positions only, [T] tokens, with q, k, v
# copied into a padded [B, L] layout for the attention kernel; auto = packed with the chunked kernel
TokenLayout = Literal["auto", "padded", "packed"]


@dataclass
class HSTUConfig(FeatureOptions, ModelConfig):
    name: str = "hstu"
    max_len: int = 200  # longest history; also the attention normaliser n
    dim: int = 50  # item embedding and model width
    num_blocks: int = 2
    num_heads: int = 1
    attention_dim: int = 50  # per-head size of Q and K
    value_dim: int = 50  # per-head size of V and U
    dropout: float = 0.2  # on the input embeddings and before f2
    attention_dropout: float = 0.0  # on the attention weights (generative-recommenders never applies it)
    time_buckets: int = 128  # buckets of log time gaps (0 disables the time bias)
    position_bias: bool = True
    kernel: HSTUKernel = "auto"  # attention kernel: auto | reference | chunked | compiled
    token_layout: TokenLayout = "auto"  # per-token work on: auto | padded | packed (real positions only)

    def __post_init__(self) -> None:
        self.check_item_features()
        if self.max_len < 1:
            raise ConfigError(f"model.max_len must be >= 1, got {self.max_len}")
        for name in ("dim", "num_heads", "attention_dim", "value_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not (0 <= self.dropout < 1 and 0 <= self.attention_dropout < 1):
            raise ConfigError("model.dropout and model.attention_dropout must be in [0, 1)")
        if self.kernel not in get_args(HSTUKernel):
            raise ConfigError(f"model.kernel: unknown kernel {self.kernel!r}; valid: {', '.join(get_args(HSTUKernel))}")
        if self.token_layout not in get_args(TokenLayout):
            raise ConfigError(
                f"model.token_layout: unknown layout {self.token_layout!r}; valid: {', '.join(get_args(TokenLayout))}"
            )

    @property
    def uses_time(self) -> bool:
        return self.time_buckets > 0
