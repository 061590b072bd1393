"""The bases of the models' configs. Torch-free, like every `*_config.py` module: `genrec.config`
reads a YAML file without importing a model (see `genrec.models.registry`).

A config's typed properties are the contract the runner, the trainer and the recommender read;
nothing asks a config for an attribute it may not have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from genrec.errors import ConfigError


@dataclass
class ModelConfig:
    """Base of every model's config; `name` picks the model (see `genrec.models.registry`)."""

    name: str = "popularity"

    @property
    def uses_time(self) -> bool:
        """Whether the model reads event times (a time bias), so the data needs real timestamps."""
        return False

    @property
    def end_to_end(self) -> bool:
        """Whether a language model inside the item encoder trains with the rest, so each step can only
        embed the batch's items (HLLM with a trained item LLM)."""
        return False

    @property
    def fits_features(self) -> bool:
        """Whether the model reads side features, whose vocabularies its builder fits on the split's
        training events (the builder then takes `train=`)."""
        return False


class GenerativeConfig(ModelConfig):
    """Base of the configs of models that generate the next item's semantic ID (TIGER, the SID LLM).

    The fields are declared here for the type checker and those who read them (the run config checks
    `num_beams` against `eval.ks`; the scorer batches `eval_users_per_pass` users); each subclass's
    dataclass defines them, with its own defaults and in its own order.
    """

    sid_file: str | None  # the SIDs' file (None: the dataset's own)
    max_len: int  # history items the model reads
    train_len: int  # events per user sequence in a training batch
    num_beams: int  # beams of the constrained search = the length of the ranking
    eval_users_per_pass: int  # users beam-searched together


@dataclass
class LLMTuning:
    """Config fields of a model section that holds a language model (flat keys: model.item_llm.train, ...);
    `genrec.models.llm_tuning.prepare_for_training` applies them."""

    # new-tokens: only the rows of tokens added to the vocabulary (the SID LLM's SID tokens)
    train: Literal["frozen", "lora", "full", "new-tokens"] = "frozen"
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=list)  # module names; empty = peft's default for the model
    gradient_checkpointing: bool = True  # recompute activations in the backward pass to save memory


@dataclass
class FeatureOptions:
    """Config fields of the models that can read side features (SASRec, HSTU; flat keys:
    model.item_features, model.user_features, ...). `genrec.models.item_features.FeatureItemEncoder`
    applies the item options, `genrec.models.user_features.UserFeaturePrefix` the user features."""

    # the dataset's item features the model reads (`genrec data info DATASET` lists them); [] = ids only
    item_features: list[str] = field(default_factory=list)
    # false: an item is its features only, so an item never seen in training still has a trained vector
    item_id: bool = True
    # items with fewer training events get no id vector (features only); 0 keeps every item's id
    id_min_count: int = 0
    # training only: drop an item's id vector at this rate (per occurrence), so that the model also learns
    # to place items by their features alone, as it must for items with no id vector (new items)
    id_dropout: float = 0.0
    feature_combine: Literal["sum", "concat"] = "sum"  # id and feature vectors: summed, or concatenated + linear
    max_array_values: int = 32  # array features (genres, tags): at most this many values per item or user
    # the dataset's user features (age, gender, ...) the model reads, as prefix tokens before the history;
    # [] = none
    user_features: list[str] = field(default_factory=list)

    @property
    def uses_item_features(self) -> bool:
        """Whether the item encoder is more than an ID table."""
        return bool(self.item_features) or not self.item_id or self.id_min_count > 0

    @property
    def uses_user_features(self) -> bool:
        """Whether the user's features are prefix tokens before the history."""
        return bool(self.user_features)

    @property
    def fits_features(self) -> bool:
        return self.uses_item_features or self.uses_user_features

    def check_item_features(self) -> None:
        """ConfigError for options that contradict each other (the user features' too)."""
        if not self.item_id and not self.item_features:
            raise ConfigError("model.item_id=false makes items their features only: name some in model.item_features")
        for key in ("item_features", "user_features"):
            names = getattr(self, key)
            if len(set(names)) != len(names):
                twice = next(n for n in names if names.count(n) > 1)
                raise ConfigError(f"model.{key} names {twice!r} twice")
        if self.id_min_count < 0 or self.max_array_values < 1:
            raise ConfigError(
                f"model.id_min_count must be >= 0 and model.max_array_values >= 1, got "
                f"{self.id_min_count} and {self.max_array_values}"
            )
        if not 0 <= self.id_dropout < 1 or (self.id_dropout > 0 and not (self.item_id and self.item_features)):
            raise ConfigError(
                f"model.id_dropout must be in [0, 1) and needs ids and model.item_features, got {self.id_dropout}"
            )
        if self.id_min_count > 0 and not self.item_features:
            raise ConfigError("model.id_min_count drops the id vector of rare items: name model.item_features for them")
