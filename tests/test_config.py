"""Typed configs: every shipped YAML loads, overrides apply, defaults are the quickstart."""

from pathlib import Path

import pytest

from genrec.config import RunConfig, apply_overrides, dump_yaml, from_dict, load_config
from genrec.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_configs_load(path):
    config = load_config(path)
    assert isinstance(config, RunConfig) and config.name


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 2


def test_every_recipe_loads_by_its_name():
    """Recipe names hold dots ("office/llm-qwen2.5-1.5b-sft"): none may be taken for a file suffix."""
    from genrec.config import recipe_names

    names = recipe_names()
    assert "office/llm-qwen2.5-1.5b-sft" in names and len(names) == len(CONFIGS)
    for name in names:
        assert load_config(name).name


def test_overrides_parse_yaml_values_and_round_trip():
    config = load_config(None, ["eval.ks=[5, 20]", "data.min_rating=4", "data.options={user_col: uid}", "split.seed=3"])
    assert config.eval.ks == [5, 20] and config.data.min_rating == 4.0 and config.data.options == {"user_col": "uid"}
    import yaml

    assert from_dict(RunConfig, yaml.safe_load(dump_yaml(config))) == config
    assert load_config() == RunConfig()
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["eval.ks"])
    with pytest.raises(ConfigError, match="eval.ks: cutoffs must be positive"):
        load_config(None, ["eval.ks=[0]"])
    with pytest.raises(ConfigError, match=r"eval.ks\[1\]: expected an integer"):
        load_config(None, ["eval.ks=[1, ten]"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("nowhere.yaml")


def test_optional_dependency_error_names_the_extra(monkeypatch):
    from genrec import optional
    from genrec.errors import GenrecError

    monkeypatch.setitem(optional.EXTRAS, "genrec_absent_module", "hllm")
    with pytest.raises(GenrecError, match=r'pip install "genrec\[hllm\]"'):
        optional.require("genrec_absent_module")
    assert optional.require("json").dumps([1]) == "[1]"
