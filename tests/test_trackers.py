"""Experiment trackers get the same metrics as metrics.jsonl (MLflow's local store, W&B offline)."""

import json

import pytest

from genrec.config import load_config
from genrec.errors import ConfigError
from genrec.runner import run

from conftest import TINY_SASREC

TINY = [*TINY_SASREC, "train.epochs=2"]


def test_mlflow_and_wandb_receive_the_run_metrics(data_dir, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = load_config(None, [f"data.raw={data_dir / 'ml-100k'}", *TINY, "train.log_to=[mlflow, wandb]"])
    result = run(config, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r["ndcg@10"] for r in records if r["split"] == "valid" and not r.get("final")]
    # MLflow: the local store inside the run directory, one point per validation, the final test once
    client = mlflow.tracking.MlflowClient((tmp_path / "run" / "mlruns").resolve().as_uri())
    (logged,) = client.search_runs([client.get_experiment_by_name("genrec").experiment_id])
    assert [m.value for m in client.get_metric_history(logged.info.run_id, "valid/ndcg_at_10")] == pytest.approx(valid)
    assert logged.data.metrics["final/test/ndcg_at_10"] == pytest.approx(result.metrics["test"]["ndcg@10"])
    assert logged.data.params["model.dim"] == "16" and logged.info.status == "FINISHED"
    # W&B offline: the run file (protobuf records) holds every validation value and the final test summary
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    data = offline.read_bytes()
    assert b"final/test/ndcg@10" in data and json.dumps(result.metrics["test"]["ndcg@10"]).encode() in data
    assert all(json.dumps(value).encode() in data for value in valid)


def test_an_unknown_tracker_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train.log_to\[0\]: expected one of 'tensorboard' \| 'mlflow' \| 'wandb'"):
        load_config(None, ["train.log_to=[neptune]"])
