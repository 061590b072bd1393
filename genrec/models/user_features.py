"""User features as contextual prefix tokens (as GR's contextual features): one token per feature.

A user's features (age, gender, occupation, ...) become P = len(features) vectors that a sequential
model (SASRec, HSTU) puts before the history: every history position attends to them (they come
first under the causal mask), they are never scored as items, and the history keeps its own
positions (0..L-1) and time gaps. Vocabularies are fitted on the users of the training events
(`genrec.data.feature_tables.fit_features`), so a value no training user has is out of vocabulary.
User index 0 stands for a user the dataset does not know (a new user at serving time): each of its
categorical features is the out-of-vocabulary value and each number is "missing", so it gets the
learned OOV vectors and never a padding zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genrec.data.feature_tables import OOV, ArrayFeature, ContinuousFeature, EmbeddingFeature, Feature
from genrec.errors import ConfigError
from genrec.models.feature_embedder import FeatureEmbedder


class UserFeaturePrefix(FeatureEmbedder):
    """users [B] int64 user indices (0 = unknown) -> [B, P, D] prefix tokens, one per feature, scaled
    by sqrt(D) as the models scale their item inputs.

    features: the fitted user features by name (rows 0..M); embedding features are not user features.
    """

    def __init__(self, num_users: int, dim: int, features: dict[str, Feature], max_array_values: int = 32) -> None:
        super().__init__()
        if not features:
            raise ConfigError("a user feature prefix needs at least one user feature (model.user_features)")
        for name, feature in features.items():
            if isinstance(feature, EmbeddingFeature):
                raise ConfigError(
                    f"user feature {name!r} is an embedding; user features are sparse, array or continuous"
                )
        self.num_users, self.dim = num_users, dim
        self.add_features(num_users, dim, features, max_array_values, "users")
        for name, feature in features.items():  # row 0 = a user the dataset does not know: out of vocabulary
            if isinstance(feature, ContinuousFeature):
                continue  # row 0 is (0, absent): the map's bias, the learned "unknown"
            values = self.values(name).clone()  # not the fitted arrays' memory
            values[0] = 0
            values[(0, 0) if isinstance(feature, ArrayFeature) else 0] = OOV
            self._data(name, values)
        self.reset_parameters()

    @property
    def num_tokens(self) -> int:
        """P, the prefix length."""
        return len(self.names)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        if users.dim() != 1:
            raise ValueError(f"expected users [B], got shape {tuple(users.shape)}")
        users = users.where((users >= 0) & (users <= self.num_users), torch.zeros_like(users))  # out of range: unknown
        tokens = torch.stack([self.feature_vectors(name, users) for name in self.names], dim=1)  # [B, P, D]
        return tokens * math.sqrt(self.dim)


def user_tokens(
    prefix: UserFeaturePrefix | None, users: torch.Tensor | None, items: torch.Tensor, dropout: nn.Module
) -> torch.Tensor | None:
    """[B, P, D] the prefix tokens of `users` ([B]; None = users the dataset does not know) after
    `dropout` (the model's input dropout), for histories `items` [B, L]; None when `prefix` is None."""
    if prefix is None:
        return None
    if users is None:
        users = torch.zeros(items.shape[0], dtype=torch.long, device=items.device)
    return dropout(prefix(users))


def prepend(prefix: torch.Tensor | None, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The block input with the prefix tokens first: prefix [B, P, D] (None: no prefix), x [B, L, D],
    mask [B, L, 1] -> ([B, P+L, D], [B, P+L, 1]); the prefix positions are real (mask 1)."""
    if prefix is None:
        return x, mask
    ones = mask.new_ones(mask.shape[0], prefix.shape[1], 1)
    return torch.cat([prefix.to(x.dtype), x], dim=1), torch.cat([ones, mask], dim=1)
