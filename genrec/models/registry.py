"""Model names -> their config and model classes, imported on first use.

Reading a config must import neither torch nor any model, so the tables name each class as
"module:Class" (as transformers' auto classes do) and `model_config_class` / `model_class` import
the module when asked. Config modules are torch-free (`*_config.py`); model modules are not.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from genrec.errors import unknown_name

if TYPE_CHECKING:
    from genrec.models.base import GenerativeRecommender, SequentialRecommender
    from genrec.models.base_config import ModelConfig

# model name (`model.name` in a config) -> its config class
MODEL_CONFIGS: dict[str, str] = {
    "popularity": "genrec.models.popularity_config:PopularityConfig",
    "sasrec": "genrec.models.sasrec_config:SASRecConfig",
    "hstu": "genrec.models.hstu_config:HSTUConfig",
    "llm": "genrec.models.causal_lm_config:CausalLMConfig",
    "hllm": "genrec.models.hllm_config:HLLMConfig",
    "tiger": "genrec.models.tiger_config:TIGERConfig",
    "sid-llm": "genrec.llm.sid_llm_config:SIDLLMConfig",
}
# model name -> the trained model's class (popularity is fitted, not trained, and has none)
MODELS: dict[str, str] = {
    "sasrec": "genrec.models.sasrec:SASRec",
    "hstu": "genrec.models.hstu:HSTU",
    "llm": "genrec.models.causal_lm:CausalLMRecommender",
    "hllm": "genrec.models.hllm:HLLM",
    "tiger": "genrec.models.tiger:TIGER",
    "sid-llm": "genrec.llm.sid_llm:SIDLLM",
}
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_CONFIGS)


def resolve(target: str) -> object:
    """ "package.module:Name" -> the object, importing the module."""
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
