"""Model builders: a fresh model for a dataset, from the data objects derived here.

Model constructors take data objects only (the item count, `SemanticIds`, an item tower over the
items' cached text embeddings, a loaded Hugging Face model) and read no file; a builder derives
those from the `Dataset` and the config (reading the SID file, rendering item texts, the embedding
cache, model directories). `genrec.models.registry.model_builder` finds a model's builder by name;
the SID LLM's is `genrec.llm.build`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from genrec.data.dataset import Dataset, Sequences
from genrec.data.feature_tables import fit_features
from genrec.data.raw import cache_dir
from genrec.items.llm_embed import (
    TextEncoder,
    cached_item_embeddings,
    context_length,
    load_text_model,
    resolve_model_path,
    tokenize_texts,
)
from genrec.items.semantic_ids import semantic_ids_for
from genrec.items.text import render_item_texts
from genrec.models.base import SequentialRecommender
from genrec.models.base_config import FeatureOptions, ModelConfig
from genrec.models.causal_lm import CausalLMRecommender
from genrec.models.causal_lm_config import CausalLMConfig
from genrec.models.hllm import HLLM, FrozenTextTower, LLMTextTower
from genrec.models.hllm_config import HLLMConfig, ItemLLMConfig
from genrec.models.item_encoder import ItemEncoder
from genrec.models.item_features import FeatureItemEncoder, FeatureTextTower
from genrec.models.llm_tuning import prepare_for_training
from genrec.models.registry import model_class
from genrec.models.tiger import TIGER
from genrec.models.tiger_config import TIGERConfig
from genrec.models.user_features import UserFeaturePrefix

log = logging.getLogger("genrec.models")


def build_id_model(
    dataset: Dataset,
    config: ModelConfig,
    device: torch.device | None = None,
    progress: bool = True,
    train: Sequences | None = None,
) -> SequentialRecommender:
    """SASRec or HSTU over a learned ID table of the dataset's items, or over their side features
    (`model.item_features`), with the users' features as prefix tokens (`model.user_features`); the
    features' vocabularies are fitted on `train` (the split's training events)."""
    assert isinstance(config, FeatureOptions)
    encoder, prefix = feature_modules(dataset, config, config.dim, train)  # type: ignore[attr-defined]
    return model_class(config.name)(dataset.num_items, config, encoder, prefix)  # type: ignore[call-arg,return-value]


def feature_modules(
    dataset: Dataset, config: FeatureOptions, dim: int, train: Sequences | None
) -> tuple[FeatureItemEncoder | None, UserFeaturePrefix | None]:
    """The item encoder over the items' side features (None: the model's own ID table) and the user
    feature prefix (None: no user features) that `config` asks for, of width `dim`, fitted on `train`."""
    if not config.fits_features:
        return None, None
    if train is None:
        raise ValueError("a model with side features is built from the split's training events (train=)")
    item_names = config.item_features if config.uses_item_features else []
    tables = fit_features(dataset, train, item=item_names, user=config.user_features)
    encoder = None
    if config.uses_item_features:
        has_id = None
        if config.item_id and config.id_min_count > 0:
            has_id = np.bincount(train.items, minlength=dataset.num_items + 1) >= config.id_min_count
        encoder = FeatureItemEncoder(
            dataset.num_items,
            dim,
            tables.item,
            config.item_id,
            has_id,
            config.feature_combine,
            config.max_array_values,
            config.id_dropout,
        )
    prefix = None
    if config.uses_user_features:
        prefix = UserFeaturePrefix(dataset.num_users, dim, tables.user, config.max_array_values)
    return encoder, prefix


def build_causal_lm(
    dataset: Dataset, config: ModelConfig, device: torch.device | None = None, progress: bool = True
) -> CausalLMRecommender:
    """The pretrained causal LM `config.path` names, over a learned ID table of the dataset's items."""
    assert isinstance(config, CausalLMConfig)
    return CausalLMRecommender(dataset.num_items, config, load_causal_lm(config))


def build_tiger(
    dataset: Dataset, config: ModelConfig, device: torch.device | None = None, progress: bool = True
) -> TIGER:
    """TIGER over the SIDs `config.sid_file` names, else those the dataset ships."""
    assert isinstance(config, TIGERConfig)
    return TIGER(semantic_ids_for(dataset, config.sid_file), config)


def build_hllm(
    dataset: Dataset,
    config: ModelConfig,
    device: torch.device | None = None,
    progress: bool = True,
    train: Sequences | None = None,
) -> HLLM:
    """HLLM: the item tower over the dataset's item texts, as the item encoder of a fresh user model;
    with `model.user.item_features`, the tower's vectors are combined with the items' side features,
    and with `model.user.user_features` (an HSTU or SASRec user model) the users' features are prefix
    tokens; their vocabularies are fitted on `train` (the split's training events)."""
    assert isinstance(config, HLLMConfig)
    device = device or torch.device("cpu")
    user = config.user  # one of hllm_config.USER_MODELS
    user_llm = load_causal_lm(user) if isinstance(user, CausalLMConfig) else None
    dim = user_llm.config.hidden_size if user_llm is not None else user.dim  # type: ignore[attr-defined]
    tower = item_tower(dataset, config.item_llm, config.end_to_end, dim, device, progress)
    prefix = None
    if isinstance(user, FeatureOptions) and user.fits_features:
        if train is None:
            raise ValueError("HLLM with side features is built from the split's training events (train=)")
        tables = fit_features(dataset, train, item=user.item_features, user=user.user_features)
        if user.item_features:
            tower = FeatureTextTower(
                tower, dataset.num_items, dim, tables.item, user.feature_combine, user.max_array_values
            )
        if user.user_features:
            prefix = UserFeaturePrefix(dataset.num_users, dim, tables.user, user.max_array_values)
    if user_llm is not None:
        user_model: SequentialRecommender = CausalLMRecommender(dataset.num_items, user, user_llm, tower)
    else:
        user_model = model_class(user.name)(dataset.num_items, user, tower, prefix)  # type: ignore[call-arg,assignment]
    return HLLM(config, user_model.to(device))


def load_causal_lm(config: CausalLMConfig) -> torch.nn.Module:
    """The pretrained model `config.path` names, without its LM head (the user vectors are hidden states)."""
    model, _ = load_text_model(resolve_model_path(config.path, config.gguf_file))
    return model


def item_tower(
    dataset: Dataset, c: ItemLLMConfig, end_to_end: bool, dim: int, device: torch.device, progress: bool
) -> ItemEncoder:
    """ids [...] -> [..., dim] through the item LLM over the items' rendered texts: from their cached
    embeddings (a frozen item LLM), or through the LLM itself (trained end to end)."""
    texts = render_item_texts(dataset, c.template())
    if texts.empty:
        log.warning(
            "%d items have no text in fields %s; they are embedded from the prompt alone",
            texts.empty,
            ", ".join(texts.fields),
        )
    location = resolve_model_path(c.path, c.gguf_file)
    if not end_to_end:
        table, _ = cached_item_embeddings(
            location,
            texts.texts,
            c.pooling,
            c.max_tokens,
            cache_dir() / "item-embeddings",
            c.batch_size,
            device,
            progress,
        )
        return FrozenTextTower(torch.from_numpy(table), dim)
    model, tokenizer = load_text_model(location)
    model = prepare_for_training(model, c, "model.item_llm")
    encoder = TextEncoder(model, c.pooling, c.item_tokens)
    tokens = tokenize_texts(texts.texts, tokenizer, c.max_tokens, encoder.num_item_tokens, context_length(model))
    return LLMTextTower(encoder.to(device), tokens, tokenizer.pad_token_id, dim, c.batch_size)
