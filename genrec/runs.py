"""Run directories: the resolved config, metrics (JSON and JSONL), and later checkpoints and plots."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from genrec.config import RunConfig, from_dict, to_dict
from genrec.errors import ConfigError
from genrec.io import is_nonempty_dir, write_json_atomic, write_text_atomic

CONFIG_FILE = "config.json"  # JSON is YAML too: `genrec train RUN_DIR/config.json` reruns it
METRICS_FILE = "metrics.json"
METRICS_LOG = "metrics.jsonl"


class RunDir:
    """A folder holding one run's config and results."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, config: RunConfig, overwrite: bool = False) -> RunDir:
        run = cls(path)
        if is_nonempty_dir(run.path) and not overwrite:
            raise ConfigError(f"run directory {run.path} is not empty (choose another --out or pass --overwrite)")
        run.path.mkdir(parents=True, exist_ok=True)
        for stale in (METRICS_FILE, METRICS_LOG):
            (run.path / stale).unlink(missing_ok=True)
        write_json_atomic(run.path / CONFIG_FILE, to_dict(config))
        return run

    def save_config(self, config: RunConfig) -> None:
        write_json_atomic(self.path / CONFIG_FILE, to_dict(config))

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not (run.path / CONFIG_FILE).is_file():
            raise ConfigError(f"{run.path} is not a run directory (no {CONFIG_FILE})")
        return run

    def config(self) -> RunConfig:
        return from_dict(RunConfig, json.loads((self.path / CONFIG_FILE).read_text()))

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


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save, atomically: a crash leaves the previous checkpoint, never half of a new one."""
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def default_run_dir(name: str, root: str | Path = "runs") -> Path:
    return Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
