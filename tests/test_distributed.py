"""Two CPU processes (torchrun, gloo) train and evaluate to the same metrics as one process with the
same global batch: each process takes half of every batch, the loss is normalised by the global
number of targets, and evaluation is sharded then summed."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import walk_dataset


def _ml1m_hstu(data_dir, tmp_path) -> tuple[dict, int]:
    return {
        "name": "ddp",
        "data": {"source": "ml-1m", "raw": str(data_dir / "ml-1m-sample")},  # 600 users: even shards
        "model": {"name": "hstu", "max_len": 20, "dim": 16, "attention_dim": 8, "value_dim": 8, "dropout": 0.0},
        "train": {"epochs": 2, "batch_size": 100, "loss": {"name": "full"}, "device": "cpu", "patience": None},
        "eval": {"ks": [10, 50]},
    }, 600


def _walk_tiger(data_dir, tmp_path) -> tuple[dict, int]:
    """A generative model: the loss comes from the model itself and evaluation is a beam search."""
    dataset, sid_file = walk_dataset(tmp_path, users=100)
    return {
        "name": "ddp-tiger",
        "data": {"path": str(dataset.path)},
        "model": {
            "name": "tiger",
            "sid_file": str(sid_file),
            "max_len": 5,
            "dim": 32,
            "num_layers": 1,
            "num_heads": 2,
            "head_dim": 16,
            "ffn_dim": 64,
            "dropout": 0.0,
            "user_tokens": 8,
            "num_beams": 50,
        },
        "train": {"epochs": 2, "batch_size": 20, "lr": 0.01, "device": "cpu", "patience": None},
        "eval": {"ks": [10, 50]},
    }, 100


@pytest.mark.parametrize("recipe", [_ml1m_hstu, _walk_tiger], ids=["hstu", "tiger"])
def test_two_gloo_processes_match_one(recipe, data_dir, tmp_path):
    config, users = recipe(data_dir, tmp_path)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENREC_CACHE_DIR": str(tmp_path / "cache")}
    single = subprocess.run(
        [sys.executable, "-m", "genrec", "train", str(path), "--out", str(tmp_path / "one"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    # --standalone: torchrun picks a free port itself (no race with other processes for a fixed one)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "genrec",
        "train",
        str(path),
        "--out",
        str(tmp_path / "two"),
        "--json",
    ]
    double = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = json.loads(single.stdout), json.loads(double.stdout)  # only rank 0 prints
    for which in ("valid", "test"):
        assert two[which]["num_users"] == one[which]["num_users"] == users
        for key in ("hr@10", "ndcg@10", "hr@50", "mrr"):
            assert two[which][key] == pytest.approx(one[which][key], abs=2e-3), (which, key)
    losses = [
        [
            json.loads(r)["loss"]
            for r in (tmp_path / d / "metrics.jsonl").read_text().splitlines()
            if json.loads(r)["split"] == "train"
        ]
        for d in ("one", "two")
    ]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
