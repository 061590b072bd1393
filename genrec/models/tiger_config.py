"""The config of TIGER (`genrec.models.tiger`); torch-free, as every model config."""

from __future__ import annotations

from dataclasses import dataclass

from genrec.errors import ConfigError
from genrec.models.base_config import GenerativeConfig


@dataclass
class TIGERConfig(GenerativeConfig):
    """TIGER's T5. The defaults are the paper's (4 + 4 layers, d_model 128, 6 heads of 64, MLP 1024,
    dropout 0.1, 2000 user tokens, 20 history items)."""

    name: str = "tiger"
    # a `.index.json` of SIDs keyed by the dataset's raw item ids (`genrec sid build` writes one);
    # default: the SIDs the dataset ships (LETTER and MiniOneRec sources)
    sid_file: str | None = None
    max_len: int = 20  # history items the encoder reads
    train_len: int = 50  # latest events per user in a training batch; every target among them is one example
    dim: int = 128
    num_layers: int = 4  # encoder layers; the decoder has as many
    num_heads: int = 6
    head_dim: int = 64
    ffn_dim: int = 1024
    dropout: float = 0.1
    user_tokens: int = 2000  # user ids hashed into this many tokens (0: no user token)
    num_beams: int = 50  # beams of the constrained search = the length of the ranking
    eval_users_per_pass: int = 16  # users beam-searched together (memory: users x beams x encoder length)

    def __post_init__(self) -> None:
        for key in (
            "max_len",
            "train_len",
            "dim",
            "num_layers",
            "num_heads",
            "head_dim",
            "ffn_dim",
            "num_beams",
            "eval_users_per_pass",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.user_tokens < 0 or not 0 <= self.dropout < 1:
            raise ConfigError(
                f"model.user_tokens must be >= 0 and model.dropout in [0, 1), got {self.user_tokens}, {self.dropout}"
            )
