"""Models. Every model's scorer plugs into the same evaluator (`genrec.eval`)."""

from genrec.models.base import ModelConfig, SequentialRecommender, SequentialScorer
from genrec.models.hstu import HSTU, HSTUConfig
from genrec.models.popularity import Popularity, PopularityConfig
from genrec.models.sasrec import SASRec, SASRecConfig

# model name -> (config class, model class); popularity is not a neural model and has no class here
MODEL_CONFIGS: dict[str, type[ModelConfig]] = {"popularity": PopularityConfig, "sasrec": SASRecConfig, "hstu": HSTUConfig}
SEQUENTIAL_MODELS: dict[str, type[SequentialRecommender]] = {"sasrec": SASRec, "hstu": HSTU}

__all__ = ["HSTU", "MODEL_CONFIGS", "SEQUENTIAL_MODELS", "HSTUConfig", "ModelConfig", "Popularity",
           "PopularityConfig", "SASRec", "SASRecConfig", "SequentialRecommender", "SequentialScorer"]
