"""The peers' in-process epoch selection (benchmarks/external/peer_eval.py) against genrec's evaluator.

The peer scripts (RecTools, torch-rechub) pick their best epoch with `quick_ndcg10`, a numpy copy of
genrec's rule; it must give exactly what `genrec.eval.evaluate` gives on the same score rows,
including repeated history items, a target that is also in the history, and ties.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.data import Sequences, leave_one_out
from genrec.eval import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "external"))
from peer_eval import quick_ndcg10  # noqa: E402

N = 30  # catalogue size


def split_and_rows(seed: int, integer_scores: bool):
    rng = np.random.default_rng(seed)
    users = 40
    lengths = rng.integers(3, 15, users)
    user_of = np.repeat(np.arange(1, users + 1), lengths)
    items = rng.integers(1, N + 1, lengths.sum())  # repeats: targets also appear in histories
    seqs = Sequences.from_users(user_of, items, np.arange(lengths.sum()), users)
    cases = leave_one_out(seqs).cases("test")
    if integer_scores:  # few distinct values: many ties with the target
        rows = rng.integers(0, 4, (len(cases), N + 1)).astype(np.float32)
    else:
        rows = rng.normal(size=(len(cases), N + 1)).astype(np.float32)
    return seqs, cases, rows


@pytest.mark.parametrize("integer_scores", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quick_ndcg10_equals_genrec_evaluator(seed, integer_scores):
    seqs, cases, rows = split_and_rows(seed, integer_scores)
    row_of_user = {int(u): i for i, u in enumerate(cases.users)}
    table = torch.from_numpy(rows)
    expected = evaluate(
        lambda batch: table[[row_of_user[int(u)] for u in batch.users]], seqs, cases, N, ks=[10], progress=False
    )["ndcg@10"]
    as_exchange = {f: getattr(cases, f) for f in ("targets", "history_start", "history_end")}
    assert quick_ndcg10(rows, as_exchange, seqs.items) == pytest.approx(expected, abs=1e-12)
    assert 0.0 < expected < 1.0  # the case is not trivial


def test_quick_ndcg10_counts_ties_against_the_target():
    # one case, history [1], target 2; items 2, 3, 4 tie: the target ranks third of the three
    seq_items = np.array([1, 2])
    cases = {"targets": np.array([2]), "history_start": np.array([0]), "history_end": np.array([1])}
    rows = np.array([[9.0, 9.0, 5.0, 5.0, 5.0]], dtype=np.float32)  # column 0 and history item 1 never compete
    assert quick_ndcg10(rows, cases, seq_items) == pytest.approx(1 / np.log2(4))
