"""Run directories: the resolved config, metrics (JSON and JSONL), and later checkpoints and plots."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genrec.config import RunConfig, from_dict, to_dict
from genrec.errors import ConfigError
from genrec.io import LOCK_FILE, exclusive_lock, is_nonempty_dir, write_json_atomic, write_text_atomic

CONFIG_FILE = "config.json"  # JSON is YAML too: `genrec train RUN_DIR/config.json` reruns it
METRICS_FILE = "metrics.json"
METRICS_LOG = "metrics.jsonl"
DATASET_FILE = "dataset.json"  # where the run's prepared dataset is, so the run finds it again from anywhere
CHECKPOINTS = ("best.pt", "last.pt")  # genrec.checkpoints' names (kept here so that reading a run needs no torch)
# what `--overwrite` replaces in an existing run directory (other files of the folder are left alone)
RUN_FILES = (CONFIG_FILE, DATASET_FILE, METRICS_FILE, METRICS_LOG, *CHECKPOINTS, "curves.png")


class RunDir:
    """A folder holding one run's config and results."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, config: RunConfig, overwrite: bool = False) -> RunDir:
        """A new run directory holding `config`; an existing non-empty one only with `overwrite`, which
        removes the files of the run it held (`RUN_FILES`), so no checkpoint of that run survives."""
        run = cls(path)
        if is_nonempty_dir(run.path) and not overwrite:
            raise ConfigError(f"run directory {run.path} is not empty (choose another --out or pass --overwrite)")
        run.path.mkdir(parents=True, exist_ok=True)
        for stale in RUN_FILES:
            (run.path / stale).unlink(missing_ok=True)
        write_json_atomic(run.path / CONFIG_FILE, to_dict(config))
        return run

    @classmethod
    @contextlib.contextmanager
    def writing(
        cls, path: str | Path, config: RunConfig | None = None, overwrite: bool = False, resume: bool = False
    ) -> Iterator[RunDir]:
        """The run directory at `path`, locked against other writers for the `with` block.

        resume: open the existing run (its config is not rewritten here: the caller saves the new
        one once the checkpoint has loaded). Otherwise create it from `config`. A new run that fails
        before writing a checkpoint is removed again (when this call created its folder), so the same
        command can simply be retried.
        """
        path = Path(path)
        created, had_content = not path.exists(), is_nonempty_dir(path)
        try:
            with exclusive_lock(path / LOCK_FILE, f"run directory {path}"):
                if resume:
                    run = cls.open(path)
                else:
                    assert config is not None, "a new run needs its config"
                    run = cls.create(path, config, overwrite)
                yield run
        except BaseException:
            if (created or not (resume or had_content)) and not any((path / name).exists() for name in CHECKPOINTS):
                if created:
                    shutil.rmtree(path, ignore_errors=True)
                else:  # the folder was there and empty: leave it empty
                    for name in (*RUN_FILES, LOCK_FILE):
                        (path / name).unlink(missing_ok=True)
            raise

    def save_config(self, config: RunConfig) -> None:
        write_json_atomic(self.path / CONFIG_FILE, to_dict(config))

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not (run.path / CONFIG_FILE).is_file():
            raise ConfigError(f"{run.path} is not a run directory (no {CONFIG_FILE})")
        return run

    def config(self) -> RunConfig:
        path = self.path / CONFIG_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
        return from_dict(RunConfig, data)

    def record_dataset(self, path: Path, manifest_sha256: str, raw_path: str | None) -> None:
        """Remember the prepared dataset the run used: its folder, its manifest's checksum (so a folder
        since prepared again from other data is not taken for it) and the raw source it came from."""
        write_json_atomic(
            self.path / DATASET_FILE,
            {"path": str(Path(path).resolve()), "manifest_sha256": manifest_sha256, "raw_path": raw_path},
        )

    def recorded_dataset(self) -> dict[str, Any] | None:
        """What `record_dataset` wrote, or None (runs from before it, or an unreadable file)."""
        path = self.path / DATASET_FILE
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and isinstance(record.get("path"), str) else None

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one record (e.g. the metrics of one evaluation) to metrics.jsonl."""
        with open(self.path / METRICS_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json_atomic(self.path / METRICS_FILE, metrics)

    def drop_metrics_after(self, step: int) -> None:
        """Forget the metrics.jsonl records of steps after `step` and the final ones: a run resumed
        from its checkpoint at `step` writes them again."""
        path = self.path / METRICS_LOG
        if path.is_file():
            records = [(line, json.loads(line)) for line in path.read_text().splitlines()]
            kept = [line for line, r in records if r.get("step", 0) <= step and not r.get("final")]
            write_text_atomic(path, "".join(line + "\n" for line in kept))

    def metrics(self) -> dict[str, Any]:
        path = self.path / METRICS_FILE
        return json.loads(path.read_text()) if path.is_file() else {}


def default_run_dir(name: str, root: str | Path = "runs") -> Path:
    return Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
