"""Models. Every model's scorer plugs into the same evaluator (`genrec.eval`)."""

from genrec.models.base import ModelConfig, SequentialRecommender, SequentialScorer
from genrec.models.causal_lm import CausalLMConfig, CausalLMRecommender
from genrec.models.hllm import HLLM, HLLMConfig, ItemLLMConfig
from genrec.models.hstu import HSTU, HSTUConfig
from genrec.models.popularity import Popularity, PopularityConfig
from genrec.models.sasrec import SASRec, SASRecConfig

# model name -> (config class, model class); popularity is not a neural model and has no class here
MODEL_CONFIGS: dict[str, type[ModelConfig]] = {"popularity": PopularityConfig, "sasrec": SASRecConfig, "hstu": HSTUConfig,
                                               "llm": CausalLMConfig, "hllm": HLLMConfig}  # fmt: skip
SEQUENTIAL_MODELS: dict[str, type[SequentialRecommender]] = {"sasrec": SASRec, "hstu": HSTU, "llm": CausalLMRecommender,
                                                             "hllm": HLLM}  # fmt: skip

__all__ = ["HLLM", "HSTU", "CausalLMConfig", "CausalLMRecommender", "HLLMConfig", "ItemLLMConfig", "MODEL_CONFIGS", "SEQUENTIAL_MODELS", "HSTUConfig", "ModelConfig", "Popularity",
           "PopularityConfig", "SASRec", "SASRecConfig", "SequentialRecommender", "SequentialScorer"]
