"""Run directories and datasets are untrusted input: nothing in them runs code, an output never
replaces an input, one writer at a time, and files keep the modes the umask asks for."""

import json
import logging
import os
import pickle
import stat
import subprocess
import sys

import pytest
import torch

from genrec.checkpoints import load_checkpoint, rng_state, set_rng_state
from genrec.config import load_config
from genrec.data import prepare_dataset
from genrec.errors import CheckpointError, ConfigError
from genrec.io import LOCK_FILE, LockedError, exclusive_lock
from genrec.runner import run

from conftest import TINY_SASREC, write_lines

TINY = [*TINY_SASREC, "train.epochs=1"]


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A one-epoch SASRec run on MovieLens-100K, prepared into its own dataset folder."""
    root = tmp_path_factory.mktemp("trained")
    dataset = prepare_dataset("ml-100k", root / "ml-100k", raw=data_dir / "ml-100k")
    config = load_config(None, [f"data.path={dataset.path}", *TINY])
    run(config, root / "run", progress=False)
    return root / "run"


def copy_run(run_dir, dest):
    dest.mkdir()
    for p in run_dir.iterdir():
        if p.is_file() and p.name != LOCK_FILE:
            (dest / p.name).write_bytes(p.read_bytes())
    return dest


def cli(*args):
    """The real `genrec` command in a subprocess: (exit status, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "genrec.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return done.returncode, done.stdout, done.stderr


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("genrec: error:")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


class Exploit:
    """A pickle that creates a file when it is loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_crafted_checkpoint_runs_no_code(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path / "shared-run")
    marker = tmp_path / "pwned"
    good = torch.load(trained / "best.pt", weights_only=True)
    torch.save({"model": good["model"], "epoch": Exploit(marker)}, run_dir / "best.pt")
    for args in (["eval", run_dir], ["export", run_dir, "--out", tmp_path / "export"]):
        code, _, err = cli(*args)
        assert_one_line_error(
            code, err, "best.pt: refusing to load", "not only tensors and plain values", "GLOBAL posix.system"
        )
        assert not marker.exists()
    # a plain pickle (not a torch zip) is refused the same way
    (run_dir / "best.pt").write_bytes(pickle.dumps({"model": Exploit(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(run_dir / "best.pt")
    assert not marker.exists() and not (tmp_path / "export").exists()


def test_checkpoints_hold_only_tensors_and_plain_values(trained):
    last = torch.load(trained / "last.pt", weights_only=True)  # would raise on any other object
    assert {"model", "optimizer", "scheduler", "state", "rng", "config"} <= set(last)
    # the random states survive the round trip exactly
    state = rng_state()
    expected = (torch.rand(3), __import__("numpy").random.rand(3), __import__("random").random())
    torch.rand(5)
    set_rng_state(state)
    again = (torch.rand(3), __import__("numpy").random.rand(3), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and (expected[1] == again[1]).all() and expected[2] == again[2]


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_checkpoints_are_one_line_errors(trained, tmp_path, damage):
    run_dir = copy_run(trained, tmp_path / "run")
    for name in ("best.pt", "last.pt"):
        data = (run_dir / name).read_bytes()
        (run_dir / name).write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"x" * 100}[damage])
    config_before = (run_dir / "config.json").read_text()
    for args in (
        ["eval", run_dir],
        ["export", run_dir, "--out", tmp_path / "export"],
        ["train", "--resume", run_dir, "--set", "train.epochs=2"],
    ):
        code, _, err = cli(*args)
        assert_one_line_error(code, err, ".pt: truncated or not a checkpoint")
    # the failed resume did not rewrite the run's config (train.epochs is still 1)
    assert (run_dir / "config.json").read_text() == config_before
    assert not (tmp_path / "export").exists()


def test_a_config_that_no_longer_fits_the_checkpoint(trained, tmp_path):
    code, _, err = cli("eval", trained, "--set", "model.dim=32")
    assert_one_line_error(
        code, err, "best.pt: its weights do not fit the model", "size mismatch", "was config.json or a --set changed"
    )
    run_dir = copy_run(trained, tmp_path / "run")
    text = (run_dir / "config.json").read_text()
    (run_dir / "config.json").write_text(text.replace('"seed": 0,', '"seed": 0', 1))
    code, _, err = cli("eval", run_dir)
    assert_one_line_error(code, err, "config.json, line 4: not valid JSON")


def test_overwrite_never_deletes_an_input(trained, data_dir, tmp_path):
    raw = tmp_path / "release"
    write_lines(raw / "events.csv", ["user_id,item_id,timestamp", "1,1,1", "1,2,2", "2,1,3"])
    for out in (raw, tmp_path, raw / "events.csv"):
        code, _, err = cli("data", "prepare", "csv", "--raw", raw / "events.csv", "--out", out, "--overwrite")
        assert_one_line_error(code, err, "genrec never writes over its inputs")
        assert (raw / "events.csv").read_text().startswith("user_id")
    # the item table is an input too
    write_lines(tmp_path / "items" / "items.csv", ["item_id,title", "1,a", "2,b"])
    code, _, err = cli(
        "data",
        "prepare",
        "csv",
        "--raw",
        raw / "events.csv",
        "--items",
        tmp_path / "items" / "items.csv",
        "--out",
        tmp_path / "items",
        "--overwrite",
    )
    assert_one_line_error(code, err, "contains the item table (--items)")
    # a run's export cannot replace the run; the default RUN/export is fine
    before = (trained / "best.pt").read_bytes()
    code, _, err = cli("export", trained, "--out", trained, "--overwrite")
    assert_one_line_error(code, err, "contains the run's config.json")
    assert (trained / "best.pt").read_bytes() == before
    # a run directory cannot be its own dataset, nor sit inside it
    dataset = json.loads((trained / "config.json").read_text())["data"]["path"]
    with pytest.raises(ConfigError, match="is inside the dataset"):
        run(load_config(None, [f"data.path={dataset}", *TINY]), f"{dataset}/run", progress=False)
    assert not os.path.exists(f"{dataset}/run")


def test_a_run_directory_has_one_writer(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path / "run")
    log_before = (run_dir / "metrics.jsonl").read_text()
    with exclusive_lock(run_dir / LOCK_FILE, "the test's hold"):
        code, _, err = cli("train", "--resume", run_dir, "--set", "train.epochs=2")
        assert_one_line_error(code, err, "is in use by another genrec process", f"(pid {os.getpid()})")
        with pytest.raises(LockedError):
            run(load_config(run_dir / "config.json"), run_dir, overwrite=True, progress=False)
    assert (run_dir / "metrics.jsonl").read_text() == log_before
    # the lock goes with its holder: the same resume now runs
    code, out, err = cli("train", "--resume", run_dir, "--set", "train.epochs=2", "--json")
    assert code == 0, err and json.loads(out)["run_dir"] == str(run_dir)


def test_a_failed_run_leaves_no_folder_that_blocks_a_retry(data_dir, tmp_path):
    code, _, err = cli(
        "train",
        "--out",
        tmp_path / "run",
        "--set",
        f"data.raw={data_dir / 'ml-100k'}",
        "--set",
        "model.name=sasrec",
        "--set",
        "train.lr=nan",
    )
    assert_one_line_error(code, err, "train.lr: expected a finite number, got nan")
    assert not (tmp_path / "run").exists()


def test_run_names_stay_inside_the_runs_folder():
    for name in ("../../../x", "/tmp/x", "a/b", "..", "~x"):
        with pytest.raises(ConfigError, match="not a plain run name"):
            load_config(None, [f"name={name}"])


def test_an_interrupted_prepare_is_cleaned_up_by_the_next(data_dir, tmp_path, caplog):
    stale = tmp_path / ".ds.tmp-abc123"
    stale.mkdir()
    (stale / "interactions.parquet").write_bytes(b"half")
    with caplog.at_level(logging.WARNING, logger="genrec"):
        prepare_dataset("ml-100k", tmp_path / "ds", raw=data_dir / "ml-100k")
    assert not stale.exists()
    assert any("removed" in r.message and ".ds.tmp-abc123" in r.message for r in caplog.records)
    # a second writer of the same dataset is refused while the first holds it
    with exclusive_lock(tmp_path / ".ds2.lock", "the test's hold"):
        with pytest.raises(LockedError, match="in use by another genrec process"):
            prepare_dataset("ml-100k", tmp_path / "ds2", raw=data_dir / "ml-100k")
    assert not (tmp_path / "ds2").exists()


def test_outputs_follow_the_umask(data_dir, tmp_path):
    old = os.umask(0o022)
    try:
        dataset = prepare_dataset("ml-100k", tmp_path / "ds", raw=data_dir / "ml-100k")
    finally:
        os.umask(old)
    assert stat.S_IMODE(dataset.path.stat().st_mode) == 0o755
    for p in dataset.path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p.name
