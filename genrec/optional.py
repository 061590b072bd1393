"""Lazy imports of heavy optional dependencies, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from genrec.errors import GenrecError

# module name -> the pip extra of genrec that provides it
EXTRAS = {
    "transformers": "llm",
    "accelerate": "llm",
    "peft": "llm",
    "gguf": "llm",
    "trl": "rl",
    "faiss": "ann",
    "matplotlib": "plot",
    "fastapi": "serve",
    "uvicorn": "serve",
}


def require(module: str) -> ModuleType:
    """Import `module` or raise an error telling which `pip install genrec[extra]` provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        hint = f'pip install "genrec[{extra}]"' if extra else f"pip install {top}"
        raise GenrecError(f"this feature needs the optional dependency {top!r}: {hint}") from exc
