"""Property-based tests of the readers and the split: random well-formed files round-trip to the same
events; a random corruption of a file is an error or exactly what the damaged file says, never a
traceback and never a silently different dataset."""

import csv
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genrec.data import prepare_dataset
from genrec.data.splits import make_split
from genrec.errors import DataError, GenrecError

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ids as people write them: numbers, or text with spaces, accents and punctuation (quoted by the writer)
text_ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=8)
ids = st.one_of(st.integers(0, 10**9), text_ids.filter(lambda s: s.strip() == s and not _looks_special(s)))


def _looks_special(value: str) -> bool:
    """Text that a CSV reader turns into something else: numbers, null markers, booleans."""
    try:
        float(value)
        return True
    except ValueError:
        pass
    return value.lower() in {
        "",
        "na",
        "n/a",
        "nan",
        "-nan",
        "null",
        "none",
        "true",
        "false",
        "#n/a",
        "1.#ind",
        "-1.#ind",
        "1.#qnan",
        "-1.#qnan",
        "#n/a n/a",
        "<na>",
        "-na",
    }


@st.composite
def event_tables(draw):
    """(header, rows): rows of (user, item, timestamp) with ids all ints or all text per column."""
    user_kind, item_kind = draw(st.booleans()), draw(st.booleans())
    users = st.integers(0, 10**9) if user_kind else ids.filter(lambda v: isinstance(v, str))
    items = st.integers(0, 10**9) if item_kind else ids.filter(lambda v: isinstance(v, str))
    rows = draw(st.lists(st.tuples(users, items, st.integers(0, 2**40)), min_size=1, max_size=40))
    return ["user_id", "item_id", "timestamp"], rows


def write_csv(path: Path, header, rows) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def expected_events(rows) -> dict:
    """user raw id -> [(item raw id, timestamp)] in time order, ties in file order (the canonical order)."""
    out: dict = {}
    for user, item, t in rows:
        out.setdefault(user, []).append((item, t))
    return {u: sorted(events, key=lambda e: e[1]) for u, events in out.items()}  # sorted() is stable


def dataset_events(dataset) -> dict:
    table = dataset.interactions
    items, users = dataset.item_raw_ids(), dataset.user_raw_ids()
    out: dict = {}
    for u, i, t in zip(table["user"].to_pylist(), table["item"].to_pylist(), table["timestamp"].to_pylist()):
        out.setdefault(users[u], []).append((items[i], t))
    return out


@SETTINGS
@given(event_tables())
def test_well_formed_files_round_trip(table):
    header, rows = table
    with tempfile.TemporaryDirectory() as tmp:
        write_csv(Path(tmp) / "events.csv", header, rows)
        dataset = prepare_dataset("csv", Path(tmp) / "ds", raw=Path(tmp) / "events.csv")
        assert dataset_events(dataset) == expected_events(rows)
        assert dataset.num_interactions == len(rows)
        # raw ids are numbered in sorted order
        assert dataset.item_raw_ids()[1:] == sorted({r[1] for r in rows})


@SETTINGS
@given(st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=12), min_size=1, max_size=25))
def test_leave_one_out_holds_out_each_users_last_two_events(histories):
    rows = [(u, item, t) for u, items in enumerate(histories) for t, item in enumerate(items)]
    with tempfile.TemporaryDirectory() as tmp:
        write_csv(Path(tmp) / "events.csv", ["user_id", "item_id", "timestamp"], rows)
        dataset = prepare_dataset("csv", Path(tmp) / "ds", raw=Path(tmp) / "events.csv")
        if not any(len(h) >= 3 for h in histories):
            with pytest.raises(DataError, match="leaves no test cases"):
                make_split(dataset.sequences, "leave-one-out")
            return
        split = make_split(dataset.sequences, "leave-one-out")
        raw_items, raw_users = dataset.item_raw_ids(), dataset.user_raw_ids()
    seq = split.sequences
    for u in range(1, dataset.num_users + 1):
        history = [raw_items[i] for i in seq.user(u)]
        assert history == histories[raw_users[u]]
        train = [raw_items[i] for i in split.train.user(u)]
        assert train == (history[:-2] if len(history) >= 3 else history)
    for cases, back in ((split.valid, 2), (split.test, 1)):
        for c in range(len(cases)):
            u = int(cases.users[c])
            history = histories[raw_users[u]]
            assert raw_items[int(cases.targets[c])] == history[-back]
            shown = seq.items[cases.history_start[c] : cases.history_end[c]]
            assert [raw_items[i] for i in shown] == history[:-back]
    assert len(split.test) == sum(len(h) >= 3 for h in histories)


GOOD = "user_id,item_id,timestamp\n" + "".join(
    f"{u},{10 + (u * 7 + k) % 5},{1000 + 3 * k}\n" for u in range(1, 6) for k in range(4)
)
DAMAGE = st.sampled_from(list(b"0123456789abcxyz,\n") + [0xE9, 0xFF, None])  # None: delete the byte


def reference_parse(data: bytes):
    """What a corrupted file says, read by the rules genrec documents (UTF-8; a column of integers is
    integer ids, anything else text; timestamps are integers), or None where it must be an error."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if not rows or rows[0] != ["user_id", "item_id", "timestamp"] or any(len(r) != 3 for r in rows):
        return None
    body = rows[1:]
    if not body or any(not field for r in body for field in r):
        return None
    if any(_looks_special(field) for r in body for field in r[:2] if not field.isdigit()):
        return None
    if not all(r[2].isdigit() for r in body):
        return None

    def column(values):
        return [int(v) for v in values] if all(v.isdigit() for v in values) else values

    users, items = column([r[0] for r in body]), column([r[1] for r in body])
    return list(zip(users, items, [int(r[2]) for r in body]))


@SETTINGS
@given(st.integers(0, len(GOOD) - 1), DAMAGE)
def test_a_corrupted_byte_is_an_error_or_exactly_what_the_file_says(position, byte):
    data = bytearray(GOOD.encode())
    if byte is None:
        del data[position]
    else:
        data[position] = byte
    expected = reference_parse(bytes(data))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "events.csv").write_bytes(bytes(data))
        try:
            dataset = prepare_dataset("csv", Path(tmp) / "ds", raw=Path(tmp) / "events.csv")
        except GenrecError as exc:
            assert expected is None, f"refused a well-formed file ({exc}): {bytes(data)!r}"
            assert "\n" not in str(exc)
            assert not (Path(tmp) / "ds").exists()
            return
        assert expected is not None, f"accepted a file that should be refused: {bytes(data)!r}"
        assert dataset_events(dataset) == expected_events(expected)
        assert np.all(dataset.interactions["timestamp"].to_numpy() >= 0)
