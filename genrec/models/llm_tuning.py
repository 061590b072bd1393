"""How a Hugging Face model trains inside a genrec model: frozen, LoRA adapters (peft) or all weights,
with activation checkpointing. Shared by HLLM's item LLM and the causal-LM user model."""

from __future__ import annotations

from torch import nn

from genrec.errors import ConfigError
from genrec.models.base_config import LLMTuning
from genrec.optional import require


def prepare_for_training(
    model: nn.Module, tuning: LLMTuning, where: str, new_tokens: list[int] | None = None
) -> nn.Module:
    """`model` with the trainable weights `tuning` asks for (`where`: the config section, for errors).

    new_tokens: token ids added to the vocabulary; their embedding rows (input, and output when
    untied) train in the `lora` and `new-tokens` modes (through peft's trainable tokens)."""
    if tuning.train == "frozen":
        return model.requires_grad_(False)
    if tuning.train == "new-tokens" and not new_tokens:
        raise ConfigError(f"{where}.train=new-tokens trains only tokens added to the vocabulary, and none were added")
    if tuning.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable({"use_reentrant": False})
        elif hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if tuning.train == "full":
        return model
    peft = require("peft")
    token_rows = {name: list(new_tokens) for name in _embedding_module_names(model)} if new_tokens else None
    if tuning.train == "new-tokens":
        config = peft.TrainableTokensConfig(token_indices=list(new_tokens or []), target_modules=list(token_rows or []))
    else:
        config = peft.LoraConfig(
            r=tuning.lora_rank,
            lora_alpha=tuning.lora_alpha,
            lora_dropout=tuning.lora_dropout,
            target_modules=list(tuning.lora_targets) or None,
            trainable_token_indices=token_rows,
        )
    try:
        adapted = peft.get_peft_model(model, config)
    except ValueError as exc:  # peft knows no default target modules for this architecture
        raise ConfigError(f"{where}.lora_targets: {exc}") from None
    exclude_frozen_weights_from_state_dict(adapted)
    return adapted


def _embedding_module_names(model: nn.Module) -> list[str]:
    """The module names of the input embedding and, when its weights are not tied to it, the output head."""
    tables = [model.get_input_embeddings()]
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and head.weight is not tables[0].weight:
        tables.append(head)
    return [name.split(".")[-1] for name, module in model.named_modules() if any(module is t for t in tables)]


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
