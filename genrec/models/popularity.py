"""The popularity baseline: an item's score is how often it occurs in the training split."""

from __future__ import annotations

import numpy as np
import torch

from genrec.data.dataset import Sequences
from genrec.eval.evaluator import EvalBatch


class Popularity:
    """Scores every item by its number of training events, the same for every user."""

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items
        self.counts = torch.zeros(num_items + 1)

    def fit(self, train: Sequences) -> Popularity:
        counts = np.bincount(train.items, minlength=self.num_items + 1)
        self.counts = torch.from_numpy(counts[: self.num_items + 1].astype(np.float32))
        return self

    def __call__(self, batch: EvalBatch) -> torch.Tensor:
        """[B, N+1] float scores: the training counts, repeated for each of the B users."""
        B = batch.users.shape[0]
        return self.counts.to(batch.users.device).expand(B, -1)
