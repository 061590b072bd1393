"""How a Hugging Face model trains inside a genrec model: frozen, LoRA adapters (peft) or all weights,
with activation checkpointing. Shared by HLLM's item LLM and the causal-LM user model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from genrec.errors import ConfigError
from genrec.optional import require


@dataclass
class LLMTuning:
    """Config fields of a model section that holds a language model (flat keys: model.item_llm.train, ...)."""

    train: Literal["frozen", "lora", "full"] = "frozen"
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=list)  # module names; empty = peft's default for the model
    gradient_checkpointing: bool = True  # recompute activations in the backward pass to save memory


def prepare_for_training(model: nn.Module, tuning: LLMTuning, where: str) -> nn.Module:
    """`model` with the trainable weights `tuning` asks for (`where`: the config section, for errors)."""
    if tuning.train == "frozen":
        return model.requires_grad_(False)
    if tuning.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable({"use_reentrant": False})
        elif hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if tuning.train == "full":
        return model
    peft = require("peft")
    lora = peft.LoraConfig(r=tuning.lora_rank, lora_alpha=tuning.lora_alpha, lora_dropout=tuning.lora_dropout,
                           target_modules=list(tuning.lora_targets) or None)  # fmt: skip
    try:
        adapted = peft.get_peft_model(model, lora)
    except ValueError as exc:  # peft knows no default target modules for this architecture
        raise ConfigError(f"{where}.lora_targets: {exc}") from None
    exclude_frozen_weights_from_state_dict(adapted)
    return adapted


def exclude_frozen_weights_from_state_dict(module: nn.Module) -> None:
    """Leave `module`'s frozen parameters (a LoRA run's base model) out of its state dict, so that
    checkpoints hold what training changed (adapters, new tokens), not a copy of the pretrained
    model. Loading puts the current (pretrained, as read from the model directory) values back for
    the missing keys, so strict loading still works."""
    frozen = {name for name, param in module.named_parameters() if not param.requires_grad}
    if not frozen:
        return

    def drop(_: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
        for name in frozen:
            state_dict.pop(prefix + name, None)

    def restore(_: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
        for name, param in module.named_parameters():
            if name in frozen:
                state_dict.setdefault(prefix + name, param.detach())

    module.register_state_dict_post_hook(drop)
    module.register_load_state_dict_pre_hook(restore)
