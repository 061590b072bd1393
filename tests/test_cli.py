"""The `genrec` command end to end: prepare, info, eval, train, quickstart, and its errors."""

import json
import subprocess
import sys

import pytest
import yaml

from genrec.cli import main


def run_cli(capsys, *args):
    code = main(list(map(str, args)))
    out, err = capsys.readouterr()
    return code, out, err


def test_prepare_info_and_eval_json(data_dir, tmp_path, capsys):
    out = tmp_path / "ml100k"
    code, stdout, _ = run_cli(
        capsys, "data", "prepare", "ml-100k", "--raw", data_dir / "ml-100k", "--out", out, "--json"
    )
    assert code == 0 and json.loads(stdout)["num_interactions"] == 100000
    code, _, err = run_cli(capsys, "data", "prepare", "ml-100k", "--raw", data_dir / "ml-100k", "--out", out)
    assert code == 2 and "not empty" in err and "--overwrite" in err
    code, stdout, _ = run_cli(capsys, "data", "info", out)
    assert code == 0 and "num_users: 943" in stdout and "num_items: 1,682" in stdout
    code, stdout, _ = run_cli(capsys, "eval", "--data", out, "--model", "popularity", "--json")
    metrics = json.loads(stdout)  # stdout holds exactly one JSON object
    assert code == 0 and metrics["num_users"] == 943 and metrics["split"] == "test"
    assert set(metrics) >= {"hr@1", "hr@10", "ndcg@10", "hr@200", "ndcg@200", "mrr"}
    code, stdout, _ = run_cli(capsys, "eval", "--data", out, "--split", "valid", "--ks", "3", "--json")
    assert set(json.loads(stdout)) >= {"hr@3", "ndcg@3", "mrr"} and "hr@10" not in json.loads(stdout)


def test_quickstart_trains_and_compares_three_models(data_dir, tmp_path, capsys):
    out = tmp_path / "qs"
    code, stdout, _ = run_cli(capsys, "quickstart", "--raw", data_dir / "ml-100k", "--out", out, "--epochs", "1")
    assert code == 0
    for name in ("popularity", "sasrec", "hstu"):
        assert f"{name} (test)" in stdout and f"{name} (valid)" in stdout
        config = json.loads((out / name / "config.json").read_text())
        assert config["data"]["source"] == "ml-100k" and config["model"]["name"] == name
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["test"]["num_users"] == 943 and metrics["protocol"] == "leave-one-out"
    assert json.loads((out / "hstu" / "config.json").read_text())["train"]["epochs"] == 1
    log = [json.loads(line) for line in (out / "popularity" / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in log] == ["valid", "test"]
    # a run directory evaluates to the same numbers
    for name in ("popularity", "hstu"):
        code, stdout, _ = run_cli(capsys, "eval", out / name, "--json")
        expected = json.loads((out / name / "metrics.json").read_text())["test"]["ndcg@10"]
        assert json.loads(stdout)["ndcg@10"] == pytest.approx(expected, abs=1e-9)


def test_train_config_with_overrides_and_errors(data_dir, tmp_path, capsys):
    config = tmp_path / "pop.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "pop",
                "data": {"source": "ml-1m", "raw": str(data_dir / "ml-1m-sample")},
                "split": {"protocol": "time"},
            }
        )
    )
    code, stdout, _ = run_cli(
        capsys, "train", config, "--set", "split.test_fraction=0.2", "--out", tmp_path / "r", "--json"
    )
    assert code == 0
    result = json.loads(stdout)
    assert result["test"]["num_users"] > 0 and result["valid"]["num_users"] > 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["split"] == {**saved["split"], "protocol": "time", "test_fraction": 0.2}
    # the saved config reruns to the same numbers
    code, stdout, _ = run_cli(capsys, "train", tmp_path / "r" / "config.json", "--out", tmp_path / "r3", "--json")
    assert json.loads(stdout)["test"] == result["test"]
    code, _, err = run_cli(capsys, "train", config, "--set", "model.nme=x", "--out", tmp_path / "r2")
    assert code == 2 and "unknown config key 'model.nme'; valid keys of model: name" in err
    code, _, err = run_cli(capsys, "data", "prepare", "movielens", "--out", tmp_path / "x")
    assert code == 2 and "valid sources:" in err and "ml-20m" in err


def test_console_entry_point():
    result = subprocess.run([sys.executable, "-m", "genrec", "--help"], capture_output=True, text=True, check=True)
    for command in ("data", "eval", "train", "quickstart"):
        assert command in result.stdout


def test_data_raw_expands_environment_variables(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GENREC_DATA_DIR", str(data_dir))
    monkeypatch.delenv("GENREC_NOT_SET", raising=False)
    code, stdout, _ = run_cli(
        capsys,
        "train",
        "ml-100k/popularity",
        "--set",
        "data.raw=$GENREC_DATA_DIR/ml-100k",
        "--out",
        tmp_path / "r",
        "--json",
    )
    assert code == 0 and json.loads(stdout)["test"]["num_users"] == 943
    code, _, stderr = run_cli(
        capsys, "train", "ml-100k/popularity", "--set", "data.raw=$GENREC_NOT_SET/ml-100k", "--out", tmp_path / "r2"
    )
    assert code == 2 and "GENREC_NOT_SET" in stderr and "not set" in stderr


def test_recipes_and_config_commands(capsys):
    code, stdout, _ = run_cli(capsys, "recipes")
    assert code == 0 and "ml-100k/hstu" in stdout and "office/llm-qwen2.5-1.5b-sft" in stdout
    code, stdout, _ = run_cli(capsys, "recipes", "--json")
    rows = {r["name"]: r["description"] for r in json.loads(stdout)}
    assert rows["ml-1m/hstu"].startswith("hstu on ml-1m")
    code, stdout, _ = run_cli(
        capsys, "config", "ml-100k/hstu", "--set", "train.epochs=3", "--seed", "7", "--device", "cpu"
    )
    resolved = yaml.safe_load(stdout)
    assert code == 0 and resolved["train"]["epochs"] == 3 and resolved["seed"] == 7
    assert resolved["train"]["device"] == "cpu" and resolved["model"]["name"] == "hstu"
    code, stdout, _ = run_cli(capsys, "config", "ml-100k/sasrec", "--json")
    assert json.loads(stdout)["model"]["name"] == "sasrec"


def test_data_info_shape_and_quiet(ml100k, capsys):
    code, stdout, err = run_cli(capsys, "data", "info", ml100k.path, "--json", "--quiet")
    info = json.loads(stdout)
    assert code == 0 and info["mean_history"] == pytest.approx(100000 / 943, abs=0.01)
    assert info["density"] == pytest.approx(100000 / (943 * 1682), rel=1e-3) and info["median_history"] == 65.0


def test_a_run_directory_works_from_anywhere(data_dir, tmp_path, monkeypatch, capsys):
    """eval and export find the run's dataset without GENREC_DATA_DIR, from another directory; a dataset
    folder that is gone is prepared again from the raw source the run recorded."""
    monkeypatch.setenv("GENREC_DATA_DIR", str(data_dir))
    run = tmp_path / "run"
    code, stdout, _ = run_cli(
        capsys,
        "train",
        "ml-100k/sasrec",
        "--set",
        "train.epochs=1",
        "--set",
        "model.dim=8",
        "--out",
        run,
        "--json",
        "--seed",
        "3",
    )
    assert code == 0
    trained = json.loads(stdout)["test"]["ndcg@10"]
    recorded = json.loads((run / "dataset.json").read_text())
    assert json.loads((run / "config.json").read_text())["seed"] == 3 and recorded["raw_path"].endswith("ml-100k")
    monkeypatch.delenv("GENREC_DATA_DIR")
    monkeypatch.chdir(tmp_path.parent)
    code, stdout, _ = run_cli(capsys, "eval", run, "--json")
    assert code == 0 and json.loads(stdout)["ndcg@10"] == pytest.approx(trained, abs=1e-9)
    import shutil

    shutil.rmtree(recorded["path"])  # the prepared dataset is gone: prepared again from the recorded raw files
    code, stdout, _ = run_cli(capsys, "export", run, "--json")
    assert code == 0 and json.loads(stdout)["num_items"] == 1682


def test_json_output_into_a_closed_pipe_is_not_an_error(tmp_path):
    script = "import sys; sys.argv = ['genrec', 'recipes']; from genrec.cli import main; raise SystemExit(main())"
    # `true` exits without reading, so the listing is written into a pipe nobody reads any more
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f'{sys.executable} -c "{script}" | true'], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
