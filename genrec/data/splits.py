"""Evaluation protocols: leave-one-out, time split, user split, and the new-item (cold-start) split.

Every protocol returns a `Split`: the training events (a per-user prefix of each sequence) and
the validation and test cases. A case is (user, target item, history = the events before the
target), with the history given as a range of the full `Sequences`, so nothing is copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from genrec.data.dataset import Sequences
from genrec.errors import ConfigError, DataError, unknown_name

PROTOCOLS = ("auto", "leave-one-out", "time", "user", "predefined", "new-items")


@dataclass(frozen=True)
class EvalCases:
    """Evaluation cases, one row each.

    users:             [C] int64 user index
    targets:           [C] int64 item index to be ranked
    history_start/end: [C] int64 positions in the full `Sequences`: the history is
                       sequences.items[history_start:history_end] (the events before the target)
    target_timestamps: [C] int64 time of the target event (the moment of the request)
    """

    users: np.ndarray
    targets: np.ndarray
    history_start: np.ndarray
    history_end: np.ndarray
    target_timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def take(self, index: np.ndarray | slice) -> EvalCases:
        """The cases at `index` (e.g. one process's shard: `slice(rank, None, world_size)`)."""
        return EvalCases(
            self.users[index],
            self.targets[index],
            self.history_start[index],
            self.history_end[index],
            self.target_timestamps[index],
        )

    def sample(self, max_cases: int | None, seed: int = 0) -> EvalCases:
        """At most `max_cases` of the cases, a fixed random sample kept in order (None: all)."""
        if max_cases is None or max_cases >= len(self):
            return self
        return self.take(np.sort(np.random.default_rng(seed).choice(len(self), size=max_cases, replace=False)))

    @staticmethod
    def at(sequences: Sequences, users: np.ndarray, positions: np.ndarray) -> EvalCases:
        """Cases whose target is the event at `positions`, with every earlier event of the user as history."""
        users = np.asarray(users, dtype=np.int64)
        positions = np.asarray(positions, dtype=np.int64)
        return EvalCases(
            users=users,
            targets=sequences.items[positions],
            history_start=sequences.offsets[users],
            history_end=positions,
            target_timestamps=sequences.timestamps[positions],
        )


@dataclass(frozen=True)
class Split:
    """A protocol applied to a dataset: training events plus validation and test cases."""

    protocol: str
    sequences: Sequences
    train: Sequences
    valid: EvalCases
    test: EvalCases

    def cases(self, name: str) -> EvalCases:
        if name not in ("valid", "test"):
            raise unknown_name("split", name, ["valid", "test"])
        return self.valid if name == "valid" else self.test

    def cold_cases(self, name: str, max_train_count: int) -> EvalCases:
        """The cases of `name` whose target item occurs at most `max_train_count` times in training
        (cold and long-tail items: where item text should help most)."""
        cases = self.cases(name)
        counts = np.bincount(self.train.items, minlength=int(cases.targets.max(initial=0)) + 1)
        return cases.take(np.flatnonzero(counts[cases.targets] <= max_train_count))

    def new_item_cases(self, name: str) -> EvalCases:
        """The cases of `name` whose target item never occurs in training (new items: only their
        features can place them)."""
        return self.cold_cases(name, 0)


def leave_one_out(sequences: Sequences) -> Split:
    """Last event = test target, second-to-last = validation target, the rest = training.

    Users with fewer than 3 events are training-only. The sequences must already be in time order
    with ties in raw-file order (the canonical dataset guarantees it).
    """
    ends = sequences.offsets[1:]  # [M+1] one past each user's last event
    lengths = sequences.lengths
    users = np.flatnonzero(lengths >= 3)
    users = users[users > 0]
    train_ends = ends.copy()
    train_ends[users] -= 2
    return Split(
        protocol="leave-one-out",
        sequences=sequences,
        train=sequences.prefixes(train_ends),
        valid=EvalCases.at(sequences, users, ends[users] - 2),
        test=EvalCases.at(sequences, users, ends[users] - 1),
    )


def _event_users(sequences: Sequences) -> np.ndarray:
    """[E] int64 user index of every event."""
    return np.repeat(np.arange(len(sequences.lengths), dtype=np.int64), sequences.lengths)


def time_cut_points(sequences: Sequences, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Global cut times so that about the last `test_fraction` of events are test and the
    `valid_fraction` before them validation."""
    if not (0 < valid_fraction and 0 < test_fraction and valid_fraction + test_fraction < 1):
        raise ConfigError(
            f"valid_fraction and test_fraction must be > 0 with a sum < 1, got {valid_fraction}, {test_fraction}"
        )
    ts = np.sort(sequences.timestamps)
    n = len(ts)
    return int(ts[int(n * (1 - valid_fraction - test_fraction))]), int(ts[int(n * (1 - test_fraction))])


def time_split(
    sequences: Sequences,
    valid_time: int,
    test_time: int,
    targets: Literal["first", "all"] = "first",
) -> Split:
    """Global time split: events before `valid_time` train; targets in [valid_time, test_time) are
    validation, at or after `test_time` test.

    targets="first" evaluates each user's first event of each period; "all" evaluates every event
    of the period (each with all of the user's earlier events as history). Cases without any earlier
    event (users who arrive after the cut) are skipped.
    """
    if valid_time > test_time:
        raise ConfigError(f"valid_time ({valid_time}) must not be after test_time ({test_time})")
    if targets not in ("first", "all"):
        raise unknown_name("time-split targets mode", targets, ["first", "all"])
    event_users = _event_users(sequences)
    ts = sequences.timestamps
    before_valid = np.bincount(event_users[ts < valid_time], minlength=len(sequences.lengths))
    train_ends = sequences.offsets[:-1] + before_valid

    def cases(in_period: np.ndarray) -> EvalCases:
        positions = np.flatnonzero(in_period)
        users = event_users[positions]
        if targets == "first":
            _, first = np.unique(users, return_index=True)
            positions, users = positions[first], users[first]
        has_history = positions > sequences.offsets[users]
        return EvalCases.at(sequences, users[has_history], positions[has_history])

    return Split(
        protocol="time",
        sequences=sequences,
        train=sequences.prefixes(train_ends),
        valid=cases((ts >= valid_time) & (ts < test_time)),
        test=cases(ts >= test_time),
    )


def new_item_split(
    sequences: Sequences,
    valid_time: int,
    test_time: int,
    targets: Literal["first", "all"] = "first",
) -> Split:
    """Cold-start evaluation: the time split, keeping only the validation and test cases whose target
    item has no training event (an item first seen after `valid_time`).

    targets="first" keeps each user's first such case of each period; "all" keeps every one (each
    with all of the user's earlier events as history).
    """
    split = time_split(sequences, valid_time, test_time, "all")
    seen = np.zeros(int(sequences.items.max(initial=0)) + 1, dtype=bool)
    seen[split.train.items] = True

    def new(cases: EvalCases) -> EvalCases:
        cases = cases.take(np.flatnonzero(~seen[cases.targets]))
        if targets == "first":
            cases = cases.take(np.unique(cases.users, return_index=True)[1])
        return cases

    return Split("new-items", sequences, split.train, new(split.valid), new(split.test))


def user_split(sequences: Sequences, valid_fraction: float, test_fraction: float, seed: int = 0) -> Split:
    """Users are drawn at random into train / validation / test groups.

    Training uses the whole sequences of training users; a held-out user is evaluated on their last
    event given all earlier ones. Users with fewer than 2 events always train.
    """
    if not (0 <= valid_fraction and 0 <= test_fraction and valid_fraction + test_fraction < 1):
        raise ConfigError(
            f"valid_fraction and test_fraction must be >= 0 with a sum < 1, got {valid_fraction}, {test_fraction}"
        )
    lengths = sequences.lengths
    candidates = np.flatnonzero(lengths >= 2)
    candidates = candidates[candidates > 0]
    order = np.random.default_rng(seed).permutation(candidates)
    num_test = int(round(sequences.num_users * test_fraction))
    num_valid = int(round(sequences.num_users * valid_fraction))
    test_users = np.sort(order[:num_test])
    valid_users = np.sort(order[num_test : num_test + num_valid])
    ends = sequences.offsets[1:]
    train_ends = ends.copy()
    held_out = np.concatenate([test_users, valid_users])
    train_ends[held_out] = sequences.offsets[held_out]
    return Split(
        protocol="user",
        sequences=sequences,
        train=sequences.prefixes(train_ends),
        valid=EvalCases.at(sequences, valid_users, ends[valid_users] - 1),
        test=EvalCases.at(sequences, test_users, ends[test_users] - 1),
    )


def predefined_split(sequences: Sequences, cases: pa.Table) -> Split:
    """The split that came with the dataset (e.g. MiniOneRec's time split of sliding windows).

    cases: columns split, user, position (index of the target in the user's sequence) and
    history_length (how many earlier events the case shows, e.g. MiniOneRec's window of 10).
    Training uses each user's events before their first validation or test target.
    """
    names = cases["split"].to_numpy(zero_copy_only=False)
    users = cases["user"].to_numpy().astype(np.int64)
    targets = sequences.offsets[users] + cases["position"].to_numpy().astype(np.int64)
    starts = targets - cases["history_length"].to_numpy().astype(np.int64)
    held_out = names != "train"
    train_ends = sequences.offsets[1:].copy()
    np.minimum.at(train_ends, users[held_out], targets[held_out])

    def pick(name: str) -> EvalCases:
        rows = np.flatnonzero(names == name)
        return EvalCases(
            users[rows],
            sequences.items[targets[rows]],
            starts[rows],
            targets[rows],
            sequences.timestamps[targets[rows]],
        )

    return Split("predefined", sequences, sequences.prefixes(train_ends), pick("valid"), pick("test"))


def make_split(
    sequences: Sequences,
    protocol: str = "auto",
    *,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    valid_time: int | None = None,
    test_time: int | None = None,
    time_targets: Literal["first", "all"] = "first",
    seed: int = 0,
    predefined: pa.Table | None = None,
) -> Split:
    """Apply the protocol named `protocol` (one of `PROTOCOLS`).

    "auto" is the split that came with the dataset (`predefined`, the dataset's split cases) when
    there is one, else leave-one-out.
    """
    if protocol == "auto":
        protocol = "predefined" if predefined is not None else "leave-one-out"
    if protocol == "predefined":
        if predefined is None:
            raise ConfigError("protocol 'predefined' needs a dataset that comes with its own split (this one has none)")
        split = predefined_split(sequences, predefined)
    elif protocol == "leave-one-out":
        split = leave_one_out(sequences)
    elif protocol in ("time", "new-items"):
        if valid_time is None or test_time is None:
            cut_valid, cut_test = time_cut_points(sequences, valid_fraction, test_fraction)
            valid_time = cut_valid if valid_time is None else valid_time
            test_time = cut_test if test_time is None else test_time
        protocol_split = time_split if protocol == "time" else new_item_split
        split = protocol_split(sequences, valid_time, test_time, time_targets)
    elif protocol == "user":
        split = user_split(sequences, valid_fraction, test_fraction, seed)
    else:
        raise unknown_name("protocol", protocol, PROTOCOLS)
    if len(split.test) == 0:
        raise DataError(f"the {protocol} protocol leaves no test cases on this dataset")
    return split
