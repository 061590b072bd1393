"""Tiny random-weight language models written to disk as local checkpoints, for tests and smoke checks
(`benchmarks/gpu_check.py --device cpu`): they load through the same code paths as real models."""

from __future__ import annotations

from pathlib import Path

import torch

from genrec.optional import require


def word_tokenizer(texts: list[str], pad: bool):  # noqa: ANN201 - a transformers PreTrainedTokenizerFast
    """A word-level tokenizer trained on `texts` (with a pad token only if `pad`, as Llama has none)."""
    transformers = require("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[UNK]", "</s>"] + (["[PAD]"] if pad else [])
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=2000, special_tokens=specials))
    kwargs = {"pad_token": "[PAD]"} if pad else {}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="</s>", **kwargs)


def write_tiny_model(
    folder: str | Path, texts: list[str], pad: bool, model_class: str, config_class: str, **sizes: int
) -> Path:
    """A random-weight model of `model_class` (a transformers class name) and a word-level tokenizer
    trained on `texts`, saved together as a local checkpoint folder."""
    transformers = require("transformers")
    tokenizer = word_tokenizer(texts, pad=pad)
    config = getattr(transformers, config_class)(vocab_size=len(tokenizer), **sizes)
    torch.manual_seed(0)
    getattr(transformers, model_class)(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def write_tiny_llama(folder: str | Path, texts: list[str], max_positions: int = 512, **extra: bool) -> Path:
    """A 2-layer Llama (hidden 32) with no pad token, like real Llama tokenizers (`extra`: more config keys,
    e.g. tie_word_embeddings)."""
    sizes = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    return write_tiny_model(
        folder, texts, False, "LlamaForCausalLM", "LlamaConfig", max_position_embeddings=max_positions, **sizes, **extra
    )
