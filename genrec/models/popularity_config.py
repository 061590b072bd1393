"""The config of the popularity baseline (`genrec.models.popularity`); torch-free, as every model config."""

from __future__ import annotations

from genrec.models.base_config import ModelConfig


class PopularityConfig(ModelConfig):
    """The popularity baseline has no parameters."""
