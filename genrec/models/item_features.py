"""An item encoder over side features: an item's vector from its id and its typed features.

    sparse      one learned vector per value (brand): an embedding table, 0 = missing (a zero vector),
                1 = out of vocabulary (learned)
    array       the mean of its values' vectors (genres, tags), at most `max_array_values` of them
    continuous  a linear map of (normalised value, present) (year, price): a missing value gets the
                map's bias, a learned "unknown"
    embedding   a linear map of a fixed vector (an LLM's text embedding, an image model's), zero when
                the item has none

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

from genrec.data.feature_tables import ArrayFeature, ContinuousFeature, EmbeddingFeature, Feature, SparseFeature
from genrec.models.item_encoder import ItemEncoder


class FeatureItemEncoder(ItemEncoder):
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
        self.names = list(features)
        self.id_table = nn.Embedding(num_items + 1, dim, padding_idx=0) if item_id else None
        if has_id is not None:
            self.register_buffer("has_id", torch.from_numpy(np.asarray(has_id, dtype=bool)), persistent=False)
        else:
            self.has_id = None
        self.tables = nn.ModuleDict()
        for name, feature in features.items():
            if isinstance(feature, (SparseFeature, ArrayFeature)):
                values = feature.ids if isinstance(feature, SparseFeature) else feature.padded(max_array_values)
                self._data(name, "values", torch.from_numpy(np.asarray(values, dtype=np.int64)))
                self.tables[name] = nn.Embedding(feature.num_embeddings, dim, padding_idx=0)
            elif isinstance(feature, ContinuousFeature):
                inputs = np.stack([feature.values, feature.present.astype(np.float32)], axis=-1)
                self._data(name, "values", torch.from_numpy(inputs.astype(np.float32)))
                self.tables[name] = nn.Linear(2, dim)
            elif isinstance(feature, EmbeddingFeature):
                vectors = feature.vectors * feature.present[:, None]
                self._data(name, "values", torch.from_numpy(vectors.astype(np.float32)))
                self.tables[name] = nn.Linear(feature.dim, dim, bias=False)
            else:
                raise TypeError(f"feature {name!r}: unknown kind {type(feature).__name__}")
            rows = len(getattr(self, f"_{name}_values")) - 1
            if rows != num_items:
                raise ValueError(f"feature {name!r} has rows for {rows} items, not {num_items}")
        parts = len(self.names) + (self.id_table is not None)
        self.project = nn.Linear(parts * dim, dim) if combine == "concat" else None
        self.reset_parameters()

    def _data(self, name: str, kind: str, tensor: torch.Tensor) -> None:
        self.register_buffer(f"_{name}_{kind}", tensor, persistent=False)

    def reset_parameters(self) -> None:
        """Embedding rows ~ truncated normal (std 0.02, as HSTU's ID table), padding rows zero; linear maps Xavier."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
                with torch.no_grad():
                    module.weight[0].zero_()
            elif isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

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

    def feature_vectors(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        """ids [...] -> [..., D] the vectors of feature `name` for those items."""
        values = getattr(self, f"_{name}_values")[ids]
        table = self.tables[name]
        if isinstance(table, nn.Embedding) and values.dim() > ids.dim():  # an array feature: [..., K] ids
            count = (values != 0).sum(-1, keepdim=True).clamp(min=1)
            return table(values).sum(-2) / count
        return table(values)
