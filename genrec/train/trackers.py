"""Experiment trackers: the run's metrics records sent to TensorBoard, MLflow or Weights & Biases.

The run directory's metrics.jsonl is always written; trackers are optional copies of it, chosen by
`train.log_to` (each needs its package: `pip install 'genrec[track]'`). Every record is one
evaluation or one epoch of training (`{"split": ..., "epoch": ..., "step": ..., metric: value}`);
records with `final: true` are the best checkpoint's validation and test metrics, logged once as
`final/<split>/<metric>`. MLflow allows no "@" in a name, so there `ndcg@10` is `ndcg_at_10`.

MLflow writes to `$MLFLOW_TRACKING_URI`, or when it is not set to a local store in the run directory
(`RUN/mlruns`, read with `MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri RUN/mlruns`). Weights & Biases follows its
own environment (`WANDB_MODE=offline` keeps everything on disk, under `RUN/wandb`; `WANDB_PROJECT`,
default "genrec").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from genrec.config import RunConfig, to_dict
from genrec.errors import ConfigError
from genrec.run_dir import RunDir

TRACKERS = ("tensorboard", "mlflow", "wandb")


class Tracker(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The metric values of a record, keyed `<split>/<metric>` (`final/<split>/<metric>` for final ones)."""
    prefix = ("final/" if record.get("final") else "") + str(record.get("split", "train"))
    skip = ("epoch", "step", "time", "final")
    return {
        f"{prefix}/{k}": float(v)
        for k, v in record.items()
        if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def flat_config(config: RunConfig) -> dict[str, Any]:
    """The config as `a.b.c: value` pairs (trackers show parameters flat)."""

    def walk(node: dict, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(walk(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    return walk(to_dict(config), "")


def _require(module: str, package: str, name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"train.log_to has {name!r}, which needs the {package} package: pip install "
            f"'genrec[track]' (or pip install {package})"
        ) from None


class TensorBoardTracker:
    def __init__(self, run_dir: Path, config: RunConfig) -> None:
        _require("tensorboard", "tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", record.get("epoch", 0)))  # optimizer steps, as MLflow and W&B count
        for key, value in numbers(record).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    def __init__(self, run_dir: Path, config: RunConfig) -> None:
        self.mlflow = _require("mlflow", "mlflow-skinny", "mlflow")
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a local file store in the run directory: MLflow 3 keeps it behind an opt-in
            uri = (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.mlflow.set_tracking_uri(uri)
        self.mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "genrec"))
        self.run = self.mlflow.start_run(run_name=config.name)
        self.mlflow.log_params({k: str(v)[:500] for k, v in flat_config(config).items()})
        self.mlflow.set_tag("genrec.run_dir", str(run_dir.resolve()))

    def log(self, record: dict[str, Any]) -> None:
        step = None if record.get("final") else int(record.get("step", record.get("epoch", 0)))
        # MLflow names allow no "@": ndcg@10 is logged as ndcg_at_10
        self.mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in numbers(record).items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class WandbTracker:
    def __init__(self, run_dir: Path, config: RunConfig) -> None:
        wandb = _require("wandb", "wandb", "wandb")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "genrec"),
            name=config.name,
            config=flat_config(config),
            dir=str(run_dir),
            reinit="finish_previous",
        )

    def log(self, record: dict[str, Any]) -> None:
        values = numbers(record)
        if record.get("final"):
            self.run.summary.update(values)
        else:
            self.run.log({**values, "epoch": record.get("epoch", 0)}, step=int(record.get("step", 0)))

    def close(self) -> None:
        self.run.finish()


def open_trackers(names: list[str], run_dir: Path, config: RunConfig) -> list[Tracker]:
    """The trackers `names` asks for, started for this run."""
    classes = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker}
    return [classes[name](run_dir, config) for name in dict.fromkeys(names)]


class RunLog:
    """A run's metrics records: appended to metrics.jsonl and sent to the trackers `train.log_to` names.

    run_dir None (or enabled False: another process of a distributed run writes) logs nothing.
    """

    def __init__(self, run_dir: RunDir | None, config: RunConfig, enabled: bool = True) -> None:
        self.run_dir = run_dir if enabled else None
        t = config.train
        names = t.log_to + (["tensorboard"] if t.tensorboard else [])
        self.trackers = open_trackers(names, self.run_dir.path, config) if self.run_dir is not None else []

    def __call__(self, record: dict[str, Any]) -> None:
        if self.run_dir is not None:
            self.run_dir.log_metrics(record)
            for tracker in self.trackers:
                tracker.log(record)

    def close(self) -> None:
        """End the tracker runs (also after a failure or an interruption)."""
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
