"""Training batches: each user's training sequence, cut to its latest `max_len + 1` events.

A batch is right-padded (events at positions 0..length-1, then padding 0), so with a causal mask
no real position ever attends to padding. Position t predicts the item at t + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from genrec.data.dataset import Sequences


@dataclass(frozen=True)
class SequenceBatch:
    """B training sequences.

    users:      [B] int64
    items:      [B, L] int64 input items, right-padded with 0
    timestamps: [B, L] int64 unix seconds of the inputs (positions when the dataset has no times)
    lengths:    [B] int64 number of real inputs per row (>= 1)
    targets:    [B, L] int64 the next item at each position (0 where there is none)
    target_timestamps: [B, L] int64 the time of that next item (the moment position t predicts)
    """

    users: torch.Tensor
    items: torch.Tensor
    timestamps: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    target_timestamps: torch.Tensor

    def to(self, device: torch.device | str) -> SequenceBatch:
        return SequenceBatch(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})

    def next_item_examples(self, history_len: int) -> NextItemExamples:
        """One (history, next item) example per target of the batch, for models that read each
        prefix on its own (TIGER, the SID LLM) instead of all positions in one causal pass.

        The history of the target at position t is the latest `history_len` items up to t.
        """
        rows, cols = torch.nonzero(self.targets != 0, as_tuple=True)  # [E] each
        start = (cols - history_len + 1).clamp(min=0)
        index = start[:, None] + torch.arange(history_len, device=self.items.device)[None, :]  # [E, H]
        valid = index <= cols[:, None]
        index = index.clamp(max=self.items.shape[1] - 1)
        history = self.items[rows[:, None], index] * valid
        return NextItemExamples(
            self.users[rows],
            history,
            cols - start + 1,
            self.targets[rows, cols],
            self.timestamps[rows[:, None], index] * valid,
            self.target_timestamps[rows, cols],
        )

    def longest_first(self) -> SequenceBatch:
        """The same rows, longest first (ties in batch order), so that consecutive `rows` slices
        hold sequences of similar length and cut off most of the padding."""
        order = torch.argsort(self.lengths, descending=True, stable=True)
        return SequenceBatch(**{f.name: getattr(self, f.name)[order] for f in fields(self)})

    def rows(self, start: int, stop: int) -> SequenceBatch:
        """Rows start..stop-1, with the padding columns none of them uses cut off."""
        width = max(int(self.lengths[start:stop].max()), 1)
        return SequenceBatch(
            **{
                f.name: getattr(self, f.name)[start:stop]
                if f.name in ("users", "lengths")
                else getattr(self, f.name)[start:stop, :width]
                for f in fields(self)
            }
        )


@dataclass(frozen=True)
class NextItemExamples:
    """E (history -> next item) examples.

    users:   [E] int64
    history: [E, H] int64 the latest items before the target, oldest first, right-padded with 0
    lengths: [E] int64 real items per history (>= 1)
    targets: [E] int64 the item that followed
    timestamps: [E, H] int64 the history's times (0 where padded), when known
    target_timestamps: [E] int64 the target's time, when known
    """

    users: torch.Tensor
    history: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    timestamps: torch.Tensor | None = None
    target_timestamps: torch.Tensor | None = None


class TrainSequences(TorchDataset):
    """Training windows of the users with at least 2 training events: item i of the dataset is one
    window of at most `max_len + 1` consecutive events of one user (`max_len` inputs, each predicting
    the next).

    windows="latest": one window per user, its latest events (generative-recommenders' recipe; the
        older targets of a user with more than `max_len + 1` events are never trained on).
    windows="all": each user's sequence cut from its end into windows whose targets do not overlap,
        so every training event after a user's first is a target once per epoch.
    """

    def __init__(self, train: Sequences, max_len: int, windows: str = "latest") -> None:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        if windows not in ("latest", "all"):
            raise ValueError(f"windows must be 'latest' or 'all', got {windows!r}")
        self.train = train
        self.max_len = max_len
        self.users = np.flatnonzero(train.lengths >= 2)
        self.users = self.users[self.users > 0]
        ends = train.offsets[self.users + 1]
        if windows == "all":
            per_user = -(-(train.lengths[self.users] - 1) // max_len)  # ceil(targets / max_len)
            first = np.cumsum(per_user) - per_user
            back = np.arange(per_user.sum()) - np.repeat(first, per_user)  # 0 = the latest window of its user
            self.window_users = np.repeat(self.users, per_user)
            self.window_ends = np.repeat(ends, per_user) - back * max_len
        else:
            self.window_users, self.window_ends = self.users, ends

    def __len__(self) -> int:
        return len(self.window_users)

    def __getitem__(self, index: int) -> int:
        return index

    def collate_windows(self, indices: Sequence[int]) -> SequenceBatch:
        """The padded batch of these windows (dataset items)."""
        indices = np.asarray(indices, dtype=np.int64)
        return self.collate(self.window_users[indices], self.window_ends[indices])

    def collate(self, users: Sequence[int], ends: Sequence[int] | None = None) -> SequenceBatch:
        """Build the padded batch of these users in one vectorised step: the window of each user that
        ends before flat position `ends[i]` (default: the user's latest events)."""
        users = np.asarray(users, dtype=np.int64)
        ends = self.train.offsets[users + 1] if ends is None else np.asarray(ends, dtype=np.int64)
        starts = np.maximum(self.train.offsets[users], ends - (self.max_len + 1))
        window = ends - starts  # inputs + 1
        width = int(window.max()) - 1
        columns = np.arange(width)
        valid = columns[None, :] < (window - 1)[:, None]  # [B, L]
        positions = starts[:, None] + columns[None, :]
        safe = np.where(valid, positions, 0)
        items = np.where(valid, self.train.items[safe], 0)
        times = np.where(valid, self.train.timestamps[safe], 0)
        next_positions = np.where(valid, positions + 1, 0)
        targets = np.where(valid, self.train.items[next_positions], 0)
        target_times = np.where(valid, self.train.timestamps[next_positions], 0)
        return SequenceBatch(
            users=torch.from_numpy(users),
            items=torch.from_numpy(items),
            timestamps=torch.from_numpy(times),
            lengths=torch.from_numpy(window - 1),
            targets=torch.from_numpy(targets),
            target_timestamps=torch.from_numpy(target_times),
        )
