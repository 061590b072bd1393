"""Models. Every model's scorer plugs into the same evaluator (`genrec.eval`).

Importing this package imports no model and no torch: models and their configs are found by name
through `genrec.models.registry`, and the public classes below load on first access
(`from genrec.models import SASRec` imports `genrec.models.sasrec` then).
"""

from __future__ import annotations

import importlib

from genrec.models.registry import MODEL_NAMES, model_builder, model_class, model_config_class

# public name -> the module that defines it
_LAZY: dict[str, str] = {
    "GenerativeRecommender": "genrec.models.base",
    "Recommender": "genrec.models.base",
    "SequentialRecommender": "genrec.models.base",
    "SequentialScorer": "genrec.models.base",
    "GenerativeConfig": "genrec.models.base_config",
    "ModelConfig": "genrec.models.base_config",
    "CausalLMRecommender": "genrec.models.causal_lm",
    "CausalLMConfig": "genrec.models.causal_lm_config",
    "HLLM": "genrec.models.hllm",
    "HLLMConfig": "genrec.models.hllm_config",
    "ItemLLMConfig": "genrec.models.hllm_config",
    "HSTU": "genrec.models.hstu",
    "HSTUConfig": "genrec.models.hstu_config",
    "Popularity": "genrec.models.popularity",
    "PopularityConfig": "genrec.models.popularity_config",
    "SASRec": "genrec.models.sasrec",
    "SASRecConfig": "genrec.models.sasrec_config",
    "TIGER": "genrec.models.tiger",
    "TIGERConfig": "genrec.models.tiger_config",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genrec.models' has no attribute {name!r}")


__all__ = ["MODEL_NAMES", "model_builder", "model_class", "model_config_class", *_LAZY]
