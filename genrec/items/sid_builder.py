"""`genrec sid build`: a catalogue's item text -> text embeddings -> residual codes -> unique SIDs."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Literal

import torch

from genrec.data.dataset import Dataset
from genrec.data.raw import cache_dir
from genrec.errors import ConfigError
from genrec.items.llm_embed import cached_item_embeddings, resolve_model_path
from genrec.items.rq import QuantisationReport, RQVAEConfig, residual_kmeans, train_rqvae
from genrec.items.semantic_ids import SemanticIds, add_disambiguation_level, count_collisions, reassign_to_free_codes
from genrec.items.text import Pooling, TextTemplate, render_item_texts

log = logging.getLogger("genrec.items")


@dataclass
class SIDBuildConfig:
    """How to build SIDs. The text defaults follow MiniOneRec's text2emb step: title and description,
    plain text, masked mean pooling."""

    method: Literal["rqkmeans", "rqvae"] = "rqkmeans"
    codebook_sizes: list[int] = field(default_factory=lambda: [256, 256, 256])
    collisions: Literal["reassign", "extra-level"] = "reassign"  # LETTER / MiniOneRec, or TIGER
    fields: list[str] = field(default_factory=lambda: ["title", "description"])
    pooling: Pooling = "mean"
    max_tokens: int = 256
    batch_size: int = 32
    kmeans_iters: int = 25
    rqvae: RQVAEConfig = field(default_factory=RQVAEConfig)
    seed: int = 0


def build_semantic_ids(
    dataset: Dataset,
    embedder: str,
    config: SIDBuildConfig,
    gguf_file: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[SemanticIds, QuantisationReport]:
    """SIDs for every item of `dataset` from the text embeddings of the model at `embedder`."""
    if config.collisions == "reassign" and len(config.codebook_sizes) < 2:
        raise ConfigError("collisions=reassign moves items within the last level: it needs at least 2 levels")
    template = TextTemplate(prompt="", fields=list(config.fields), separator=" ", field_names=False)
    texts = render_item_texts(dataset, template)
    location = resolve_model_path(embedder, gguf_file)
    table, _ = cached_item_embeddings(
        location,
        texts.texts,
        config.pooling,
        config.max_tokens,
        cache_dir() / "item-embeddings",
        config.batch_size,
        device,
        progress,
    )
    x = torch.from_numpy(table[1:])  # [N, E]
    sizes = list(config.codebook_sizes)
    if config.method == "rqkmeans":
        codes, distances, report = residual_kmeans(x, sizes, config.kmeans_iters, config.seed)
    else:
        rq = dataclasses.replace(config.rqvae, codebook_sizes=sizes, seed=config.seed)
        _, codes, distances, report = train_rqvae(x, rq, progress)
    report.collisions_before = count_collisions(codes)
    if config.collisions == "extra-level":
        codes = add_disambiguation_level(codes)
        sizes.append(max(int(codes[:, -1].max()) + 1, 2))
    else:
        codes, stuck = reassign_to_free_codes(codes, distances)
        if stuck:
            log.warning(
                "%d items found no free last-level code under their prefix and keep a shared SID; use more "
                "codes in the last level or collisions=extra-level",
                stuck,
            )
    padded = torch.cat([torch.full((1, codes.shape[1]), -1, dtype=torch.long), torch.from_numpy(codes)]).numpy()
    sids = SemanticIds(padded, sizes)
    report.collisions_after = sids.collisions()
    return sids, report
