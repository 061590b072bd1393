"""The bases of the models' configs. Torch-free, like every `*_config.py` module: `genrec.config`
reads a YAML file without importing a model (see `genrec.models.registry`).

A config's typed properties are the contract the runner, the trainer and the recommender read;
nothing asks a config for an attribute it may not have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
