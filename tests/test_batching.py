"""Training windows and batches: which (history, target) pairs an epoch trains on, and how a batch is cut."""

from collections import Counter

import numpy as np
import pytest
import torch

from genrec.data.batching import TrainSequences


def _pairs(batch) -> list[tuple[int, tuple[int, ...], int]]:
    """(user, the inputs up to and including t, target at t) for every target of a batch, by brute force."""
    out = []
    for row in range(batch.users.numel()):
        items = batch.items[row, : batch.lengths[row]].tolist()
        assert batch.items[row, batch.lengths[row] :].eq(0).all()  # right-padded
        for t in range(len(items)):
            out.append((int(batch.users[row]), tuple(items[: t + 1]), int(batch.targets[row, t])))
    return out


@pytest.mark.parametrize("max_len", [7, 50])
def test_all_windows_make_every_training_event_a_target_once(ml100k, max_len):
    train = ml100k.sequences
    windows = TrainSequences(train, max_len, windows="all")
    batch = windows.collate_windows(range(len(windows)))
    got = Counter((u, y) for u, _, y in _pairs(batch))
    expected = Counter()
    for user in windows.users:
        items = train.items[train.offsets[user] : train.offsets[user + 1]].tolist()
        expected.update((int(user), y) for y in items[1:])
    assert got == expected  # every event after a user's first, as many times as it occurs
    # each target is predicted from the events right before it (at most max_len of them)
    for user, history, target in _pairs(batch)[::97]:
        items = train.items[train.offsets[user] : train.offsets[user + 1]].tolist()
        ends = [
            i
            for i in range(1, len(items))
            if items[i] == target and tuple(items[max(0, i - len(history)) : i]) == history
        ]
        assert ends and len(history) <= max_len
    long_users = int((train.lengths[windows.users] - 1 > max_len).sum())
    assert len(windows) > len(windows.users) and long_users > 0


def test_latest_window_is_each_users_last_events(ml100k):
    train = ml100k.sequences
    latest = TrainSequences(train, 20)
    assert len(latest) == len(latest.users)
    batch = latest.collate_windows([0, 3])
    assert torch.equal(batch.users, torch.from_numpy(latest.users[[0, 3]]))
    assert torch.equal(batch.items, latest.collate(latest.users[[0, 3]]).items)
    user = int(latest.users[3])
    tail = train.items[train.offsets[user + 1] - 21 : train.offsets[user + 1]]
    np.testing.assert_array_equal(batch.items[1, :20].numpy(), tail[:-1])
    np.testing.assert_array_equal(batch.targets[1, :20].numpy(), tail[1:])
    with pytest.raises(ValueError, match="windows must be 'latest' or 'all'"):
        TrainSequences(train, 20, windows="every")


def test_longest_first_keeps_rows_and_micro_batches_cut_their_padding(ml100k):
    batch = TrainSequences(ml100k.sequences, 200).collate_windows(range(64))
    ordered = batch.longest_first()
    assert sorted(_pairs(ordered)) == sorted(_pairs(batch))
    assert ordered.lengths.tolist() == sorted(batch.lengths.tolist(), reverse=True)
    last = ordered.rows(48, 64)
    assert last.items.shape[1] == int(ordered.lengths[48:].max()) < batch.items.shape[1]
