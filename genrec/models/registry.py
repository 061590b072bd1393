"""Model names -> their config class, model class and builder, imported on first use.

Reading a config must import neither torch nor any model, so the tables name each object as
"module:name" (as transformers' auto classes do) and `model_config_class`, `model_class` and
`model_builder` import the module when asked. Config modules are torch-free (`*_config.py`); model
modules are not. A builder makes a fresh model for a dataset (`genrec.models.build`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from genrec.errors import unknown_name

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from genrec.data.dataset import Dataset
    from genrec.models.base import GenerativeRecommender, Recommender, SequentialRecommender
    from genrec.models.base_config import ModelConfig

    # (dataset, config, device, progress) -> a fresh model on `device` or the CPU
    ModelBuilder = Callable[[Dataset, ModelConfig, torch.device | None, bool], Recommender]

# model name (`model.name` in a config) -> its config class
MODEL_CONFIGS: dict[str, str] = {
    "popularity": "genrec.models.popularity_config:PopularityConfig",
    "sasrec": "genrec.models.sasrec_config:SASRecConfig",
    "hstu": "genrec.models.hstu_config:HSTUConfig",
    "llm": "genrec.models.causal_lm_config:CausalLMConfig",
    "hllm": "genrec.models.hllm_config:HLLMConfig",
    "tiger": "genrec.models.tiger_config:TIGERConfig",
    "sid-llm": "genrec.llm.sid_llm_config:SIDLLMConfig",
    "ranker": "genrec.models.ranking_config:RankingConfig",
}
# model name -> the trained model's class (popularity is fitted, not trained, and has none)
MODELS: dict[str, str] = {
    "sasrec": "genrec.models.sasrec:SASRec",
    "hstu": "genrec.models.hstu:HSTU",
    "llm": "genrec.models.causal_lm:CausalLMRecommender",
    "hllm": "genrec.models.hllm:HLLM",
    "tiger": "genrec.models.tiger:TIGER",
    "sid-llm": "genrec.llm.sid_llm:SIDLLM",
    "ranker": "genrec.models.ranking:Ranker",
}
# model name -> the function that builds the trained model for a dataset
BUILDERS: dict[str, str] = {
    "sasrec": "genrec.models.build:build_id_model",
    "hstu": "genrec.models.build:build_id_model",
    "llm": "genrec.models.build:build_causal_lm",
    "hllm": "genrec.models.build:build_hllm",
    "tiger": "genrec.models.build:build_tiger",
    "sid-llm": "genrec.llm.build:build_sid_llm",
    "ranker": "genrec.models.ranking:build_ranker",
}
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_CONFIGS)


def resolve(target: str) -> object:
    """ "package.module:name" -> the object, importing the module."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def model_config_class(name: str) -> type[ModelConfig]:
    """The config class of model `name` (torch is not imported)."""
    if name not in MODEL_CONFIGS:
        raise unknown_name("model", name, MODEL_NAMES)
    return resolve(MODEL_CONFIGS[name])  # type: ignore[return-value]


def model_class(name: str) -> type[SequentialRecommender] | type[GenerativeRecommender]:
    """The class of trained model `name` (imports torch and the model's module)."""
    if name not in MODELS:
        raise unknown_name("trained model", name, tuple(MODELS))
    return resolve(MODELS[name])  # type: ignore[return-value]


def model_builder(name: str) -> ModelBuilder:
    """The builder of trained model `name`: (dataset, config, device, progress) -> a fresh model."""
    if name not in BUILDERS:
        raise unknown_name("trained model", name, tuple(BUILDERS))
    return resolve(BUILDERS[name])  # type: ignore[return-value]
