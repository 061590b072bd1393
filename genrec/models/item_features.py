"""An item encoder over side features: an item's vector from its id and its typed features
(`genrec.models.feature_embedder` turns each feature into a vector: sparse, array, continuous, embedding).

The id vector and the feature vectors are summed, or concatenated and projected to D. With
`item_id=False`, or for items below `id_min_count` training events, the id vector is left out: such
an item's vector comes from its features alone, so an item that no one has interacted with yet is
still placed by what it is. The encoder is a model's `item_encoder`, so the same vectors feed the
history (input side) and are ranked (scoring side).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from genrec.data.feature_tables import Feature
from genrec.models.feature_embedder import FeatureEmbedder, init_weights
from genrec.models.item_encoder import ItemEncoder


class FeatureItemEncoder(FeatureEmbedder, ItemEncoder):
    """ids [...] int64 item indices -> [..., D] item vectors (the padding item 0 -> zeros).

    features: the fitted item features by name (`genrec.data.feature_tables.fit_features`), rows
        indexed by item (0..N); they are data, not weights, so they are not saved in checkpoints.
    has_id: [N+1] bool, items that get an id vector (None: every item when `item_id`, else none).
    id_dropout: in training, the rate at which an occurrence of an item loses its id vector.
    """

    def __init__(
        self,
        num_items: int,
        dim: int,
        features: dict[str, Feature],
        item_id: bool = True,
        has_id: np.ndarray | None = None,
        combine: Literal["sum", "concat"] = "sum",
        max_array_values: int = 32,
        id_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_items, self.dim, self.combine, self.id_dropout = num_items, dim, combine, id_dropout
        self.id_table = nn.Embedding(num_items + 1, dim, padding_idx=0) if item_id else None
        if has_id is not None:
            self.register_buffer("has_id", torch.from_numpy(np.asarray(has_id, dtype=bool)), persistent=False)
        else:
            self.has_id = None
        self.add_features(num_items, dim, features, max_array_values)
        parts = len(self.names) + (self.id_table is not None)
        self.project = nn.Linear(parts * dim, dim) if combine == "concat" else None
        self.reset_parameters()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.id_table is not None:
            vectors = self.id_table(ids)
            if self.has_id is not None:
                vectors = vectors * self.has_id[ids].unsqueeze(-1)
            if self.training and self.id_dropout > 0:  # not rescaled: the id vector is dropped, not thinned
                vectors = vectors * (torch.rand(ids.shape, device=ids.device) >= self.id_dropout).unsqueeze(-1)
            parts.append(vectors)
        for name in self.names:
            parts.append(self.feature_vectors(name, ids))
        out = self.project(torch.cat(parts, dim=-1)) if self.project is not None else torch.stack(parts).sum(0)
        return out * (ids != 0).unsqueeze(-1)


class FeatureTextTower(FeatureEmbedder, ItemEncoder):
    """ids [...] -> [..., D]: an item tower's vector (HLLM's item LLM embedding) combined with the
    items' feature vectors, summed or concatenated and projected to D; the text vector takes the
    place of the id vector (HLLM's items have none), so every item, new ones too, has one.

    tower: ids [...] -> [..., D], kept as it is (its weights are not re-initialised).
    features: the fitted item features by name (rows 0..N).
    """

    def __init__(
        self,
        tower: ItemEncoder,
        num_items: int,
        dim: int,
        features: dict[str, Feature],
        combine: Literal["sum", "concat"] = "sum",
        max_array_values: int = 32,
    ) -> None:
        super().__init__()
        self.tower = tower
        self.add_features(num_items, dim, features, max_array_values)
        self.project = nn.Linear((len(self.names) + 1) * dim, dim) if combine == "concat" else None
        init_weights([*self.tables.modules(), *([] if self.project is None else [self.project])])
        self.init_continuous()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        parts = [self.tower(ids), *(self.feature_vectors(name, ids) for name in self.names)]
        out = self.project(torch.cat(parts, dim=-1)) if self.project is not None else torch.stack(parts).sum(0)
        return out * (ids != 0).unsqueeze(-1)
