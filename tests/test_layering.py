"""The layering of the packages (DESIGN.md), checked in fresh interpreters: each package's modules
import none of the packages above it, and reading any config imports no torch."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import genrec
from genrec.errors import ConfigError
from genrec.models import MODEL_NAMES, model_builder, model_class, model_config_class
from genrec.models.base import GenerativeRecommender, SequentialRecommender
from genrec.models.base_config import GenerativeConfig
from genrec.models.ranking import Ranker

ROOT = Path(genrec.__file__).resolve().parent.parent  # the checkout under test, for the child interpreters
HEAVY = ("torch", "transformers", "peft")

# package -> what none of its modules may import (at import time; a function may import later)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "genrec.data": (
        "genrec.items",
        "genrec.eval",
        "genrec.models",
        "genrec.llm",
        "genrec.train",
        "genrec.serve",
        "genrec.config",
        "genrec.runner",
        "genrec.cli",
    ),
    "genrec.items": ("genrec.eval", "genrec.models", "genrec.llm", "genrec.train", "genrec.serve", "genrec.runner"),
    "genrec.eval": ("genrec.items", "genrec.models", "genrec.llm", "genrec.train", "genrec.serve", "genrec.runner"),
    "genrec.models": ("genrec.llm", "genrec.train", "genrec.serve", "genrec.config", "genrec.runner", "genrec.cli"),
    "genrec.llm": ("genrec.serve", "genrec.runner", "genrec.cli"),
    "genrec.train": ("genrec.llm", "genrec.serve", "genrec.runner", "genrec.cli"),
    "genrec.serve": ("genrec.train", "genrec.cli"),
}

# model modules take data objects and read no file: only the builders (genrec.models.build,
# genrec.llm.build) call these
LOADERS = {
    "load_text_model",
    "cached_item_embeddings",
    "render_item_texts",
    "semantic_ids_for",
    "read_index_json",
    "cache_dir",
    "load_causal_lm",
    "fit_features",
}
MODEL_MODULES = [
    "genrec.models.item_features",
    "genrec.models.sasrec",
    "genrec.models.hstu",
    "genrec.models.causal_lm",
    "genrec.models.hllm",
    "genrec.models.tiger",
    "genrec.llm.sid_llm",
]

IMPORT_PACKAGE = """
import importlib, pkgutil
package = importlib.import_module({package!r})
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    try:
        importlib.import_module(module.name)
    except ModuleNotFoundError as exc:  # an optional dependency (fastapi for genrec.serve.app) is not installed
        if (exc.name or "").startswith("genrec"):
            raise
"""


def modules_after(code: str) -> set[str]:
    """The names in `sys.modules` after running `code` in a new interpreter."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def within(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules for p in packages if m == p or m.startswith(p + "."))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_does_not_import_the_layers_above_it(package):
    modules = modules_after(IMPORT_PACKAGE.format(package=package))
    assert any(m.startswith(package + ".") for m in modules)
    assert within(modules, FORBIDDEN[package]) == []


def test_reading_every_shipped_recipe_imports_no_torch():
    modules = modules_after(
        "from genrec.config import load_config, recipe_names\nfor name in recipe_names():\n    load_config(name)"
    )
    assert "genrec.config" in modules and "genrec.models.hllm_config" in modules
    assert within(modules, HEAVY) == []


def test_the_models_package_and_its_registry_import_no_model():
    modules = modules_after(
        "from genrec.models import MODEL_NAMES, model_config_class\n"
        "classes = [model_config_class(name) for name in MODEL_NAMES]"
    )
    assert within(modules, HEAVY) == []
    assert within(modules, ("genrec.models.base", "genrec.models.sasrec", "genrec.models.hstu")) == []


def test_every_registered_model_name_resolves_to_its_config_and_model_class():
    for name in MODEL_NAMES:
        config = model_config_class(name)()
        assert config.name == name
        if name == "popularity":
            continue
        model = model_class(name)
        generative = issubclass(model, GenerativeRecommender)
        assert generative or issubclass(model, (SequentialRecommender, Ranker))
        assert isinstance(config, GenerativeConfig) == generative
        assert callable(model_builder(name))
    with pytest.raises(ConfigError, match="unknown model 'sasrek'"):
        model_config_class("sasrek")
    with pytest.raises(ConfigError, match="unknown trained model 'popularity'"):
        model_class("popularity")


@pytest.mark.parametrize("module", MODEL_MODULES)
def test_a_model_module_reads_no_files(module):
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert imported & LOADERS == set()
