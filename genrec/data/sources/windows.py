"""Rebuild user sequences from prepared (history window -> target) rows, and keep the given split.

Prepared datasets (MiniOneRec CSVs, RecBole/UniSRec `.train/.valid/.test.inter`) store one row per
prediction: a user, the previous items (possibly only the last few) and the target. Taken in
order, each row must continue its user's sequence: its history must equal the end of the sequence
built so far, and its target is appended. Anything else is an error that names the row.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import pyarrow as pa

from genrec.errors import DataError


@dataclass(frozen=True)
class Window:
    """One prepared row. `where` names it in errors (e.g. "Office.test.csv, line 17")."""

    user: Hashable
    history: list
    target: Hashable
    split: str
    where: str


def chain_windows(
    windows: Iterable[Window], keep_splits: tuple[str, ...] = ("valid", "test")
) -> tuple[pa.Table, pa.Table]:
    """Sequences and split cases from windows given in time order per user.

    Returns (events, cases): events has `user`, `item`, `timestamp` (the position in the user's
    sequence: these datasets have no times); cases has `split`, `user`, `position`,
    `history_length` for the windows whose split is in `keep_splits`.
    """
    sequences: dict[Hashable, list] = {}
    cases: dict[str, list] = {"split": [], "user": [], "position": [], "history_length": []}
    for w in windows:
        seq = sequences.get(w.user)
        if seq is None:
            seq = sequences[w.user] = list(w.history)
        elif len(w.history) > len(seq) or (w.history and seq[-len(w.history) :] != list(w.history)):
            raise DataError(
                f"{w.where}: the history of user {w.user!r} does not continue their earlier rows "
                f"(expected it to end with {seq[-3:]!r}, got {list(w.history)[-3:]!r})"
            )
        seq.append(w.target)
        if w.split in keep_splits:
            cases["split"].append(w.split)
            cases["user"].append(w.user)
            cases["position"].append(len(seq) - 1)
            cases["history_length"].append(len(w.history))
    users, items, positions = [], [], []
    for user, seq in sequences.items():
        users.extend([user] * len(seq))
        items.extend(seq)
        positions.extend(range(len(seq)))
    events = pa.table({"user": users, "item": items, "timestamp": pa.array(positions, pa.int64())})
    return events, pa.table(
        {
            **cases,
            "position": pa.array(cases["position"], pa.int64()),
            "history_length": pa.array(cases["history_length"], pa.int64()),
        }
    )
