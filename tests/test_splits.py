"""Evaluation protocols on hand-made sequences, including timestamp ties."""

import numpy as np
import pytest

from genrec.data import Sequences, leave_one_out, make_split, prepare_dataset, time_split, user_split
from genrec.errors import ConfigError, DataError

from conftest import write_lines


def sequences_of(per_user: dict[int, list[tuple[int, int]]]) -> Sequences:
    """Sequences from {user: [(item, ts), ...]} given in time order, users 1..M."""
    users, items, ts = [], [], []
    for u in sorted(per_user):
        for item, t in per_user[u]:
            users.append(u), items.append(item), ts.append(t)
    return Sequences.from_users(np.array(users), np.array(items), np.array(ts), max(per_user))


def test_leave_one_out_keeps_raw_order_of_ties(tmp_path):
    # user 1 has three events at t=10 listed 30, 10, 20 in the file, then one earlier event at t=5
    write_lines(
        tmp_path / "events.csv",
        [
            "user_id,item_id,timestamp",
            "1,30,10",
            "2,10,1",
            "1,10,10",
            "2,20,2",
            "1,20,10",
            "1,40,5",
            "3,10,7",
            "3,20,8",
        ],
    )
    ds = prepare_dataset("csv", tmp_path / "ds", raw=tmp_path / "events.csv")
    raw = ds.item_raw_ids()
    assert [raw[i] for i in ds.sequences.user(1)] == [40, 30, 10, 20]
    split = leave_one_out(ds.sequences)
    assert split.test.users.tolist() == [1]  # users 2 and 3 have fewer than 3 events: training only
    assert raw[split.test.targets[0]] == 20 and raw[split.valid.targets[0]] == 10
    train = split.train
    assert [raw[i] for i in train.user(1)] == [40, 30]
    assert [raw[i] for i in train.user(2)] == [10, 20] and [raw[i] for i in train.user(3)] == [10, 20]
    seqs = split.sequences
    test_history = seqs.items[split.test.history_start[0] : split.test.history_end[0]]
    valid_history = seqs.items[split.valid.history_start[0] : split.valid.history_end[0]]
    assert [raw[i] for i in test_history] == [40, 30, 10]  # includes the validation item
    assert [raw[i] for i in valid_history] == [40, 30]
    assert split.test.target_timestamps.tolist() == [10]


def test_leave_one_out_on_ml100k_partitions_every_event(ml100k):
    seqs = ml100k.sequences
    split = leave_one_out(seqs)
    assert len(split.test) == len(split.valid) == 943  # every ML-100K user has >= 20 ratings
    assert len(split.train.items) + 2 * 943 == ml100k.num_interactions
    for u in (1, 500, 943):
        full = seqs.user(u)
        assert np.array_equal(split.train.user(u), full[:-2])
        assert split.valid.targets[u - 1] == full[-2] and split.test.targets[u - 1] == full[-1]


def test_time_split_first_and_all_targets():
    seqs = sequences_of({1: [(1, 10), (2, 20), (3, 30), (4, 40)], 2: [(5, 25), (6, 35)], 3: [(7, 15), (8, 16)]})
    split = time_split(seqs, valid_time=20, test_time=35)
    assert (
        split.train.user(1).tolist() == [1]
        and split.train.user(2).tolist() == []
        and split.train.user(3).tolist() == [7, 8]
    )
    # valid period [20, 35): user 1 -> item 2 (first), user 2 -> item 5 has no history: skipped
    assert split.valid.users.tolist() == [1] and split.valid.targets.tolist() == [2]
    assert split.test.users.tolist() == [1, 2] and split.test.targets.tolist() == [4, 6]
    assert (split.test.history_end - split.test.history_start).tolist() == [3, 1]
    every = time_split(seqs, valid_time=20, test_time=35, targets="all")
    assert every.valid.targets.tolist() == [2, 3]
    with pytest.raises(ConfigError, match="must not be after"):
        time_split(seqs, 40, 30)


def test_time_split_fractions_cut_on_event_quantiles():
    seqs = sequences_of({1: [(i, i) for i in range(1, 11)], 2: [(i, i) for i in range(11, 21)]})
    split = make_split(seqs, "time", valid_fraction=0.2, test_fraction=0.2)
    # 20 events at t = 1..20: validation starts at the 13th event (t=13), test at the 17th (t=17)
    assert len(split.train.items) == 12
    assert split.valid.users.tolist() == [2] and split.valid.targets.tolist() == [13]
    assert split.test.users.tolist() == [2] and split.test.targets.tolist() == [17]


def test_user_split_holds_out_whole_users():
    seqs = sequences_of({u: [(u * 10 + k, k) for k in range(3)] for u in range(1, 21)} | {21: [(1, 1)]})
    split = user_split(seqs, valid_fraction=0.2, test_fraction=0.2, seed=3)
    held = set(split.valid.users.tolist()) | set(split.test.users.tolist())
    assert len(split.test) == 4 and len(split.valid) == 4 and not set(split.valid.users) & set(split.test.users)
    assert 21 not in held  # a single event cannot be held out
    for u in held:
        assert len(split.train.user(u)) == 0
        assert split.test.targets.tolist() == [seqs.user(v)[-1] for v in split.test.users]
    assert sum(len(split.train.user(u)) for u in range(1, 22)) == 3 * 12 + 1
    again = user_split(seqs, 0.2, 0.2, seed=3)
    assert np.array_equal(again.test.users, split.test.users)


def test_unknown_protocol_lists_the_valid_ones():
    seqs = sequences_of({1: [(1, 1), (2, 2), (3, 3)]})
    with pytest.raises(ConfigError, match="auto, leave-one-out, new-items, predefined, time, user"):
        make_split(seqs, "random")


def test_new_item_protocol_keeps_only_targets_never_seen_in_training():
    # items 1-3 occur before the validation cut (t < 10); 4 first appears in validation, 5 and 6 in test
    seqs = sequences_of(
        {
            1: [(1, 1), (2, 2), (4, 11), (5, 21), (6, 22)],  # valid: 4 (new); test: 5, 6 (new)
            2: [(2, 3), (3, 12), (4, 13), (1, 24)],  # valid: 3 (seen), 4 (new); test: 1 (seen)
            3: [(3, 4), (6, 25), (2, 26)],  # test: 6 (new), then 2 (seen)
            4: [(5, 27)],  # no history: never a case
        }
    )
    split = make_split(seqs, "new-items", valid_time=10, test_time=20)
    assert split.protocol == "new-items"
    assert sorted(set(split.train.items.tolist())) == [1, 2, 3]
    assert list(zip(split.valid.users, split.valid.targets)) == [(1, 4), (2, 4)]
    assert list(zip(split.test.users, split.test.targets)) == [(1, 5), (3, 6)]  # each user's first new target
    # every history is the user's whole past, as in the time split
    assert seqs.items[split.test.history_start[0] : split.test.history_end[0]].tolist() == [1, 2, 4]
    every = make_split(seqs, "new-items", valid_time=10, test_time=20, time_targets="all")
    assert list(zip(every.test.users, every.test.targets)) == [(1, 5), (1, 6), (3, 6)]
    # the same cases as selecting the new items of the time split
    time = make_split(seqs, "time", valid_time=10, test_time=20, time_targets="all")
    assert time.new_item_cases("test").targets.tolist() == every.test.targets.tolist()
    assert time.new_item_cases("test").targets.tolist() == time.cold_cases("test", 0).targets.tolist()


def test_new_item_cases_under_leave_one_out_and_no_new_items():
    seqs = sequences_of({1: [(1, 1), (2, 2), (3, 3)], 2: [(1, 1), (2, 2), (1, 3)]})
    split = leave_one_out(seqs)
    assert split.new_item_cases("test").targets.tolist() == [3]  # item 3 was never trained on
    with pytest.raises(DataError, match="the new-items protocol leaves no test cases"):
        make_split(sequences_of({1: [(1, 1), (1, 30)], 2: [(1, 2), (1, 31)]}), "new-items", valid_time=10, test_time=20)
