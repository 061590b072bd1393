"""Checkpoint files: written atomically, read back as data only.

A run directory is something users share and download, so its checkpoints are untrusted input:
they are read with `torch.load(weights_only=True)`, which rebuilds tensors and plain Python values
(dicts, lists, tuples, strings, numbers) and refuses anything else, so a crafted file cannot run
code. Everything genrec writes into a checkpoint is therefore a tensor or a plain value, the
random states of numpy and Python included (see `rng_state`).
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genrec.errors import CheckpointError

LAST_CHECKPOINT = "last.pt"  # everything needed to resume: weights, optimizer, schedule, progress, random state
BEST_CHECKPOINT = "best.pt"  # the weights selected on validation


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save, atomically: a crash leaves the previous checkpoint, never half of a new one."""
    tmp = Path(path).with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _unpickling_reason(exc: BaseException) -> str:
    """The specific line of torch's weights-only refusal (it wraps it in several lines of advice)."""
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation", "WeightsUnpickler error")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith(advice)]
    return lines[0] if lines else _first_line(exc)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by genrec; any other file is refused with a `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickling_reason(exc)
        if "GLOBAL" in reason:  # a reference to Python code (a class or function), which weights_only refuses
            raise CheckpointError(
                f"{path}: refusing to load: it holds Python objects, not only tensors and plain "
                f"values (genrec reads checkpoints as data only; {reason[:160]})"
            ) from None
        raise CheckpointError(f"{path}: truncated or not a checkpoint ({reason[:160]})") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: truncated or not a checkpoint ({_first_line(exc)[:160]})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"{path}: not a genrec checkpoint (no model weights)")
    return payload


def load_weights(model: nn.Module, path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load the `model` weights of the checkpoint at `path` into `model`; returns the whole checkpoint.

    Weights that do not fit the model (another size or architecture than the one the run's config
    builds now) are a `CheckpointError` naming the first mismatch.
    """
    payload = load_checkpoint(path, map_location)
    load_state(model, payload["model"], path)
    return payload


def load_state(
    module: nn.Module | torch.optim.Optimizer | Any, state: Any, path: str | Path, what: str = "weights"
) -> None:
    """`module.load_state_dict(state)`, with a mismatch reported as a one-line `CheckpointError`."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        detail = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = detail[1] if len(detail) > 1 and detail[0].startswith("Error(s) in loading") else _first_line(exc)
        raise CheckpointError(
            f"{path}: its {what} do not fit the model the run's config builds ({reason[:300]}); "
            f"was config.json or a --set changed after training?"
        ) from None


def rng_state() -> dict[str, Any]:
    """The random state of torch, numpy and Python (and CUDA) as tensors and numbers, for exact resume."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a state from `rng_state`."""
    try:
        n, p = state["numpy"], state["python"]
        torch.set_rng_state(state["torch"])
        np.random.set_state(
            (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
        )
        random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(
            f"the checkpoint's random state is not in genrec's format ({_first_line(exc)[:160]})"
        ) from None
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
