"""A table of bad inputs through the real `genrec` command: each must exit 2 with one error line that
names the file, line or key, no traceback, and no output left behind."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genrec.cli import main

from conftest import write_lines

EVENTS = ["user_id,item_id,timestamp", "1,10,100", "1,11,101", "1,12,102", "2,10,103", "2,12,104", "2,11,105"]


def events(tmp_path, lines=EVENTS, name="events.csv"):
    return write_lines(tmp_path / name, lines)


def prepare(raw, *extra):
    return ["data", "prepare", "csv", "--raw", raw, *extra]


def latin1_events(tmp: Path) -> list:
    path = tmp / "events.csv"
    path.write_bytes("\n".join(EVENTS[:3] + ["2,caf\xe9,104"]).encode("latin-1") + b"\n")
    return prepare(path)


def latin1_items(tmp: Path) -> list:
    (tmp / "items.csv").write_bytes("item_id,title\n10,Caf\xe9 au lait\n".encode("latin-1"))
    return prepare(events(tmp), "--items", tmp / "items.csv")


def list_user_column(tmp: Path) -> list:
    table = pa.table({"user_id": [[1], [2]], "item_id": [1, 2], "timestamp": [1, 2]})
    pq.write_table(table, tmp / "events.parquet")
    return ["data", "prepare", "parquet", "--raw", tmp / "events.parquet"]


def dataset_with_wrong_counts(tmp: Path, data_dir: Path) -> list:
    assert main(["data", "prepare", "ml-100k", "--raw", str(data_dir / "ml-100k"), "--out", str(tmp / "ds")]) == 0
    manifest = json.loads((tmp / "ds" / "manifest.json").read_text())
    manifest["num_users"] = 900
    (tmp / "ds" / "manifest.json").write_text(json.dumps(manifest))
    return ["eval", "--data", tmp / "ds"]


def run_dir_with_bad_json(tmp: Path) -> list:
    write_lines(tmp / "run" / "config.json", ['{"name": "x",', '  "seed": }'])
    return ["eval", tmp / "run"]


# (case, argv builder, fragments the error line must hold); every --out is tmp/out, which must not exist after
CASES = [
    ("latin-1 byte in an events file", latin1_events, ["events.csv, line 4: not valid utf-8 text", "--encoding"]),
    ("latin-1 byte in an items file", latin1_items, ["items.csv, line 2: not valid utf-8 text"]),
    ("unknown encoding", lambda t: prepare(events(t), "--encoding", "klingon"), ["unknown text encoding 'klingon'"]),
    ("empty CSV", lambda t: prepare(write_lines(t / "e.csv", [])), ["e.csv: the file is empty", "'user_id'"]),
    (
        "nan timestamp",
        lambda t: prepare(events(t, EVENTS[:2] + ["1,11,nan"])),
        ["events.csv, line 3: no value in column 'timestamp'", "NaN"],
    ),
    (
        "wrong field count",
        lambda t: prepare(events(t, EVENTS[:3] + ["1,13"])),
        ["events.csv, line 4: expected 3 fields"],
    ),
    ("bad ISO time", lambda t: prepare(events(t, EVENTS[:2] + ["1,11,yesterday"])), ["column 'timestamp'", "ISO-8601"]),
    (
        "duplicate item id",
        lambda t: prepare(events(t), "--items", write_lines(t / "items.csv", ["item_id,title", "10,a", "10,b"])),
        ["items.csv: column 'item_id': id 10 appears 2 times"],
    ),
    ("missing items file", lambda t: prepare(events(t), "--items", t / "none.csv"), ["missing file", "none.csv"]),
    (
        "wrong column",
        lambda t: prepare(events(t), "--user-col", "uid"),
        ["no column 'uid'", "the header has 'user_id'"],
    ),
    ("list<int> user column", list_user_column, ["column 'user_id' has type list<", "integers or strings"]),
    (
        "a file for a folder source",
        lambda t: ["data", "prepare", "ml-100k", "--raw", events(t)],
        ["events.csv is a file", "release folder"],
    ),
    (
        "a folder for a file source",
        lambda t: prepare(events(t / "release").parent),
        ["is a directory; the csv source needs the interactions file"],
    ),
    (
        "output over the raw file",
        lambda t: prepare(events(t), "--out", t / "events.csv", "--overwrite"),
        ["--out", "is the raw data"],
    ),
    (
        "output under a file",
        lambda t: prepare(events(t), "--out", events(t, name="plain.txt") / "out"),
        ["plain.txt is a file, not a folder"],
    ),
    ("not a dataset", lambda t: ["data", "info", t], ["not a genrec dataset: no manifest.json"]),
    (
        "NaN learning rate",
        lambda t: ["train", "--set", "train.lr=nan"],
        ["train.lr: expected a finite number, got nan"],
    ),
    (
        "negative batch size",
        lambda t: ["train", "--set", "train.batch_size=-4"],
        ["train.batch_size must be >= 1, got -4"],
    ),
    ("unknown config key", lambda t: ["train", "--set", "train.lrate=0.1"], ["unknown config key 'train.lrate'"]),
    ("run name with a path", lambda t: ["train", "--set", "name=../../x"], ["name: '../../x' is not a plain run name"]),
    ("config file missing", lambda t: ["train", t / "nope.yaml"], ["config file not found", "nope.yaml"]),
    (
        "bad YAML",
        lambda t: ["train", write_lines(t / "c.yaml", ["train: [1, 2"])],
        ["c.yaml, line 2: not valid YAML (expected ',' or ']'"],
    ),
    ("run config.json syntax error", run_dir_with_bad_json, ["config.json, line 2: not valid JSON"]),
    ("eval of a folder that is no run", lambda t: ["eval", t], ["is not a run directory (no config.json)"]),
    ("resume of a folder that is no run", lambda t: ["train", "--resume", t / "gone"], ["is not a run directory"]),
    ("export of a folder that is no run", lambda t: ["export", t, "--out", t / "out"], ["is not a run directory"]),
]


@pytest.mark.parametrize("case,build,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, case, build, fragments):
    argv = [str(a) for a in build(tmp_path)]
    if "--out" not in argv and argv[:2] == ["data", "prepare"]:
        argv += ["--out", str(tmp_path / "out")]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    done = subprocess.run(
        [sys.executable, "-m", "genrec.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    err = done.stderr
    assert done.returncode == 2, f"{case}: exit {done.returncode}\n{err}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("genrec: error:")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, f"{case}: left {set(after) - set(before)}"


def test_a_dataset_whose_manifest_disagrees_with_its_tables(data_dir, tmp_path):
    argv = [str(a) for a in dataset_with_wrong_counts(tmp_path, data_dir)]
    done = subprocess.run([sys.executable, "-m", "genrec.cli", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "users.parquet has 943 rows but manifest.json says num_users is 900" in done.stderr.splitlines()[-1]


def test_system_errors_on_a_chosen_path_are_one_line(tmp_path, monkeypatch, capsys):
    """A PermissionError (which root, running the tests, never gets) is reported like any input error."""
    import genrec.io

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked"))

    monkeypatch.setattr(genrec.io.tempfile, "mkdtemp", refuse)
    raw = events(tmp_path)
    assert main(prepare(str(raw), "--out", str(tmp_path / "locked" / "ds"))) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"genrec: error: Permission denied: {tmp_path / 'locked'}"
    assert "Traceback" not in err
    assert main(["-v", *prepare(str(raw), "--out", str(tmp_path / "locked" / "ds"))]) == 2
    assert "Traceback" in capsys.readouterr().err  # -v keeps the traceback for a bug report
