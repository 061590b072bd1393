"""benchmarks/gpu_check.py on CPU with tiny sizes: every family's device path runs, so the GPU check cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_family_on_cpu(data_dir, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_check.py"),
            "--device",
            "cpu",
            "--tiny",
            "--work",
            str(tmp_path / "work"),
            "--json-out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "GENREC_DATA_DIR": str(data_dir), "GENREC_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {row["family"]: row for row in json.loads(out.read_text())}
    assert list(rows) == ["popularity", "sasrec", "hstu", "hllm", "tiger", "sid-llm", "embed"]
    assert all(row["status"].startswith("ok") for row in rows.values()), rows
    for family in ("sasrec", "hstu", "hllm", "tiger", "sid-llm"):
        assert rows[family]["steps"] == 3 and rows[family]["steps_per_s"] > 0
    assert "GRPO 2 steps" in rows["sid-llm"]["status"] and rows["embed"]["sequences_per_s"] > 0
    assert "module calls checked" in done.stdout


def test_the_device_watch_names_modules_and_inputs_off_the_device():
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up there
    spec.loader.exec_module(gpu_check)
    watch = gpu_check.DeviceWatch("cpu")
    handle = torch.nn.modules.module.register_module_forward_pre_hook(watch)
    try:
        torch.nn.Linear(2, 2)(torch.ones(1, 2))  # on the device: nothing to report
        assert watch.calls == 1 and watch.offenders == []
        torch.nn.Linear(2, 2, device="meta")(torch.ones(1, 2, device="meta"))
    finally:
        handle.remove()
    assert sorted(watch.offenders) == ["Linear input 0 on meta", "Linear.bias on meta", "Linear.weight on meta"]
