"""Helpers shared by the peer scripts (rechub_hstu.py, rectools_models.py): numpy and the standard
library only, so that every peer virtualenv can import them without genrec.

`quick_ndcg10` is genrec's evaluation rule re-implemented for epoch selection inside a peer's
process; the reported numbers always come from `exchange.py evaluate` (genrec's own evaluator),
which `genrec_evaluate` runs in the genrec virtualenv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]


def quick_ndcg10(scores: np.ndarray, cases: dict, seq_items: np.ndarray) -> float:
    """NDCG@10 with genrec's rule: full history masked (not the target), ties pessimistic.

    scores:    [C, N+1] float, row c scores every item for case c (column 0 = padding, ignored)
    cases:     the arrays of an exchange cases file (targets, history_start, history_end: [C])
    seq_items: sequences.npz's flat item array the history ranges point into
    """
    s = scores.copy()
    s[:, 0] = -np.inf
    targets = cases["targets"].astype(np.int64)
    for c, (a, b) in enumerate(zip(cases["history_start"], cases["history_end"])):
        s[c, seq_items[a:b]] = -np.inf
    rows = np.arange(len(s))
    t = scores[rows, targets]
    s[rows, targets] = t
    ranks = (s >= t[:, None]).sum(axis=1)  # counts the target itself
    return float(np.mean(np.where(ranks <= 10, 1.0 / np.log2(ranks + 1), 0.0)))


def genrec_evaluate(python: str, folder: Path, which: str) -> tuple[dict, float]:
    """genrec's metrics of folder/scores_<which>.npy (exchange.py evaluate run with `python`), and its seconds."""
    cmd = [
        python,
        str(REPO_ROOT / "benchmarks/external/exchange.py"),
        "evaluate",
        str(folder),
        "--scores",
        str(folder / f"scores_{which}.npy"),
        "--which",
        which,
        "--json",
    ]
    start = time.perf_counter()
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    )
    return json.loads(out.stdout.strip().splitlines()[-1]), time.perf_counter() - start


def add_common_args(
    p: argparse.ArgumentParser, batch_size: int, max_epochs: int, patience: int, max_minutes: float
) -> None:
    """The arguments every peer script shares: the exchange folder, genrec's ML-100K sizes, selection."""
    p.add_argument("folder", type=Path)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--max-epochs", type=int, default=max_epochs)
    p.add_argument("--patience", type=int, default=patience)
    p.add_argument("--max-minutes", type=float, default=max_minutes, help="stop after the epoch that passes this")
    p.add_argument("--genrec-python", default=None, help="python of the genrec venv, to run exchange.py evaluate")


def load_exchange(folder: Path) -> tuple[dict, dict, dict, dict]:
    """An exchange folder's (meta, train, sequences, {"valid": cases, "test": cases}) as dicts of arrays."""
    meta = json.loads((folder / "meta.json").read_text())
    train = dict(np.load(folder / "train.npz"))
    seq = dict(np.load(folder / "sequences.npz"))
    cases = {w: dict(np.load(folder / f"{w}.npz")) for w in ("valid", "test")}
    return meta, train, seq, cases
