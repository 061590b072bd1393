"""Models. Every model's scorer plugs into the same evaluator (`genrec.eval`)."""

from genrec.models.base import GenerativeRecommender, ModelConfig, Recommender, SequentialRecommender, SequentialScorer
from genrec.models.causal_lm import CausalLMConfig, CausalLMRecommender
from genrec.models.hllm import HLLM, HLLMConfig, ItemLLMConfig
from genrec.models.hstu import HSTU, HSTUConfig
from genrec.models.popularity import Popularity, PopularityConfig
from genrec.models.sasrec import SASRec, SASRecConfig
from genrec.models.sid_llm import SIDLLM, SIDLLMConfig
from genrec.models.tiger import TIGER, TIGERConfig

# model name -> (config class, model class); popularity is not a neural model and has no class here
MODEL_CONFIGS: dict[str, type[ModelConfig]] = {
    "popularity": PopularityConfig,
    "sasrec": SASRecConfig,
    "hstu": HSTUConfig,
    "llm": CausalLMConfig,
    "hllm": HLLMConfig,
    "tiger": TIGERConfig,
    "sid-llm": SIDLLMConfig,
}
# the trained models, by config name
NEURAL_MODELS: dict[str, type[SequentialRecommender] | type[GenerativeRecommender]] = {
    "sasrec": SASRec,
    "hstu": HSTU,
    "llm": CausalLMRecommender,
    "hllm": HLLM,
    "tiger": TIGER,
    "sid-llm": SIDLLM,
}

__all__ = [
    "SIDLLM",
    "SIDLLMConfig",
    "TIGER",
    "GenerativeRecommender",
    "Recommender",
    "TIGERConfig",
    "HLLM",
    "HSTU",
    "CausalLMConfig",
    "CausalLMRecommender",
    "HLLMConfig",
    "ItemLLMConfig",
    "MODEL_CONFIGS",
    "NEURAL_MODELS",
    "HSTUConfig",
    "ModelConfig",
    "Popularity",
    "PopularityConfig",
    "SASRec",
    "SASRecConfig",
    "SequentialRecommender",
    "SequentialScorer",
]
