"""Optional interaction filters, applied in this order: rating threshold, de-duplication, k-core."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from genrec.errors import ConfigError


@dataclass(frozen=True)
class Filters:
    """Which interactions to keep. None of them is on by default.

    min_rating: keep events whose rating is >= this (needs a rating column).
    dedup: keep only the first (earliest) event of each (user, item) pair.
    user_core / item_core: iteratively drop users with fewer than `user_core` events and items
        with fewer than `item_core` events until both hold (k-core; 0 = off).
    core_once: count events once, before any is dropped, and drop both kinds in that one pass
        (generative-recommenders' Amazon preprocessing); users or items may end below the core.
    """

    min_rating: float | None = None
    dedup: bool = False
    user_core: int = 0
    item_core: int = 0
    core_once: bool = False

    def __post_init__(self) -> None:
        if self.user_core < 0 or self.item_core < 0:
            raise ConfigError(f"user_core and item_core must be >= 0, got {self.user_core} and {self.item_core}")

    def to_dict(self) -> dict:
        return asdict(self)

    def apply(
        self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray | None
    ) -> tuple[np.ndarray, dict[str, int]]:
        """Indices of the events to keep, and the event count after each step.

        users, items: [E] int codes of events **already sorted by (user, time)**, so that
        de-duplication keeps the earliest event of each pair.
        Returns (kept [E'] int64 in increasing order, report).
        """
        keep = np.arange(len(users), dtype=np.int64)
        report = {"raw": len(users)}
        if self.min_rating is not None:
            if ratings is None:
                raise ConfigError("min_rating is set but this dataset has no rating column")
            keep = keep[ratings[keep] >= self.min_rating]
            report["after_min_rating"] = len(keep)
        if self.dedup:
            pair = users[keep].astype(np.int64) * (int(items.max(initial=0)) + 1) + items[keep]
            _, first = np.unique(pair, return_index=True)
            keep = keep[np.sort(first)]
            report["after_dedup"] = len(keep)
        if self.user_core > 1 or self.item_core > 1:
            keep = _k_core(users, items, keep, self.user_core, self.item_core, once=self.core_once)
            report["after_k_core"] = len(keep)
        return keep, report


def _k_core(
    users: np.ndarray, items: np.ndarray, keep: np.ndarray, user_core: int, item_core: int, once: bool = False
) -> np.ndarray:
    num_users, num_items = int(users.max(initial=0)) + 1, int(items.max(initial=0)) + 1
    while True:
        u, i = users[keep], items[keep]
        ok = (np.bincount(u, minlength=num_users)[u] >= user_core) & (
            np.bincount(i, minlength=num_items)[i] >= item_core
        )
        if ok.all() or once:
            return keep[ok]
        keep = keep[ok]
