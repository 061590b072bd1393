"""Typed side features -> vectors: the one layer items' and users' features go through.

    sparse      one learned vector per value (brand, gender): an embedding table, 0 = missing (a zero
                vector), 1 = out of vocabulary (learned)
    array       the mean of its values' vectors (genres, tags), at most `max_array_values` of them
    continuous  a linear map of (normalised value, present) (year, price): a missing value gets the
                map's bias, a learned "unknown". Its weights start at an id vector's scale (std 0.02):
                the map is rank one, so a larger start (Xavier gives norm ~1.8 at D=64) puts every
                item of one year at the same point of HSTU's normalised space before training
    embedding   a linear map of a fixed vector (an LLM's text embedding, an image model's), zero when
                the row has none

`FeatureEmbedder.feature_vectors(name, rows)` gives one feature's vectors for item (or user) rows;
the item encoder (`genrec.models.item_features`) sums them with the id vector, the user prefix
(`genrec.models.user_features`) makes each one a token.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from genrec.data.feature_tables import ArrayFeature, ContinuousFeature, EmbeddingFeature, Feature, SparseFeature


class FeatureEmbedder(nn.Module):
    """The tables of some fitted features (`genrec.data.feature_tables.fit_features`), rows indexed
    0..R (row 0 = padding). The values are buffers rebuilt from the dataset, not saved in checkpoints;
    the weights are `tables.NAME`. Subclasses call `add_features` in their constructor."""

    names: list[str]
    continuous: list[str]
    tables: nn.ModuleDict

    def add_features(
        self, num_rows: int, dim: int, features: dict[str, Feature], max_array_values: int, rows_are: str = "items"
    ) -> None:
        """Register `features` (each with rows 0..num_rows, the padding row and `num_rows` items or
        users) as [.., D] vectors; `dim` = D."""
        self.names = list(features)
        self.continuous = [name for name, feature in features.items() if isinstance(feature, ContinuousFeature)]
        self.tables = nn.ModuleDict()
        for name, feature in features.items():
            if isinstance(feature, (SparseFeature, ArrayFeature)):
                values = feature.ids if isinstance(feature, SparseFeature) else feature.padded(max_array_values)
                self._data(name, torch.from_numpy(np.asarray(values, dtype=np.int64)))
                self.tables[name] = nn.Embedding(feature.num_embeddings, dim, padding_idx=0)
            elif isinstance(feature, ContinuousFeature):
                inputs = np.stack([feature.values, feature.present.astype(np.float32)], axis=-1)
                self._data(name, torch.from_numpy(inputs.astype(np.float32)))
                self.tables[name] = nn.Linear(2, dim)
            elif isinstance(feature, EmbeddingFeature):
                vectors = feature.vectors * feature.present[:, None]
                self._data(name, torch.from_numpy(vectors.astype(np.float32)))
                self.tables[name] = nn.Linear(feature.dim, dim, bias=False)
            else:
                raise TypeError(f"feature {name!r}: unknown kind {type(feature).__name__}")
            rows = len(self.values(name)) - 1
            if rows != num_rows:
                raise ValueError(f"feature {name!r} has rows for {rows} {rows_are}, not {num_rows}")

    def _data(self, name: str, tensor: torch.Tensor) -> None:
        self.register_buffer(f"_{name}_values", tensor, persistent=False)

    def values(self, name: str) -> torch.Tensor:
        """[R+1, ...] the model-ready values of feature `name` (ids, padded id lists, inputs or vectors)."""
        return getattr(self, f"_{name}_values")

    def reset_parameters(self) -> None:
        """Initialise every submodule (`init_weights`), then the continuous maps (`init_continuous`)."""
        init_weights(self.modules())
        self.init_continuous()

    def init_continuous(self) -> None:
        """The continuous features' maps ~ truncated normal (std 0.02), as an embedding table's rows:
        (value, present) -> D starts at the scale of an id vector."""
        for name in self.continuous:
            nn.init.trunc_normal_(self.tables[name].weight, std=0.02, a=-0.04, b=0.04)

    def feature_vectors(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        """rows [...] int64 -> [..., D] the vectors of feature `name` for those rows."""
        values = self.values(name)[rows]
        table = self.tables[name]
        if isinstance(table, nn.Embedding) and values.dim() > rows.dim():  # an array feature: [..., K] ids
            count = (values != 0).sum(-1, keepdim=True).clamp(min=1)
            return table(values).sum(-2) / count
        return table(values)


def init_weights(modules: Iterable[nn.Module]) -> None:
    """Embedding rows ~ truncated normal (std 0.02, as HSTU's ID table), padding rows zero; linear maps
    Xavier, biases zero. Other modules are left as they are."""
    for module in modules:
        if isinstance(module, nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
            with torch.no_grad():
                module.weight[0].zero_()
        elif isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
