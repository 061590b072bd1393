"""The full-ranking evaluator against an independent brute-force computation."""

import math

import numpy as np
import pytest
import torch

from genrec.data import EvalCases, Sequences, leave_one_out
from genrec.errors import GenrecError
from genrec.eval import RankMetrics, evaluate
from genrec.models import Popularity

N = 40  # catalogue size


def random_data(seed=0, users=30):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 12, users)
    user_of = np.repeat(np.arange(1, users + 1), lengths)
    items = rng.integers(1, N + 1, lengths.sum())  # repeats allowed: a target may also be in the history
    ts = np.arange(lengths.sum())
    return Sequences.from_users(user_of, items, ts, users)


def brute_force(score_of, seqs, cases, ks=(1, 5, 10), mask=True):
    """Per case: rank = 1 + #{other items j not in history, j != 0, score_j >= score_target}."""
    ranks = []
    for c in range(len(cases)):
        u, target = int(cases.users[c]), int(cases.targets[c])
        history = set(seqs.items[cases.history_start[c] : cases.history_end[c]].tolist()) if mask else set()
        scores = score_of(u)
        better = sum(1 for j in range(1, N + 1) if j != target and j not in history and scores[j] >= scores[target])
        ranks.append(1 + better)
    out = {}
    for k in ks:
        out[f"hr@{k}"] = sum(r <= k for r in ranks) / len(ranks)
        out[f"ndcg@{k}"] = sum(1 / math.log2(r + 1) for r in ranks if r <= k) / len(ranks)
    out["mrr"] = sum(1 / r for r in ranks) / len(ranks)
    return out, ranks


def table_scorer(table):
    """A scorer reading a fixed [M+1, N+1] score table by user."""
    return lambda batch: table[batch.users]


@pytest.mark.parametrize("mask", [True, False])
def test_matches_brute_force_with_ties_and_repeats(mask):
    seqs = random_data()
    split = leave_one_out(seqs)
    # few distinct values, so many ties
    table = torch.from_numpy(np.random.default_rng(1).integers(0, 4, (31, N + 1)).astype(np.float32))
    got = evaluate(
        table_scorer(table), seqs, split.test, N, ks=(1, 5, 10), batch_size=7, mask_history=mask, progress=False
    )
    expected, _ = brute_force(lambda u: table[u].tolist(), seqs, split.test, mask=mask)
    assert got.pop("num_users") == len(split.test)
    assert got == pytest.approx(expected, abs=1e-12)


def test_constant_scorer_earns_nothing_and_perfect_scorer_everything():
    seqs = random_data(2)
    split = leave_one_out(seqs)
    constant = evaluate(lambda b: torch.zeros(len(b.users), N + 1), seqs, split.test, N, ks=(1, 10), progress=False)
    expected, ranks = brute_force(lambda u: [0.0] * (N + 1), seqs, split.test, ks=(1, 10))
    assert constant["hr@1"] == 0.0 and constant["mrr"] == pytest.approx(expected["mrr"])
    assert constant["hr@10"] == expected["hr@10"]
    # with ties counted against the target, a constant score ranks it behind every unmasked item
    for c, rank in enumerate(ranks):
        history = set(seqs.items[split.test.history_start[c] : split.test.history_end[c]].tolist())
        assert rank == N - len(history - {int(split.test.targets[c])})

    targets = torch.zeros(31, dtype=torch.long)
    targets[torch.from_numpy(split.test.users)] = torch.from_numpy(split.test.targets)

    def perfect(batch):
        scores = torch.zeros(len(batch.users), N + 1)
        scores[torch.arange(len(batch.users)), targets[batch.users]] = 1.0
        return scores

    best = evaluate(perfect, seqs, split.test, N, ks=(1,), progress=False)
    assert best["hr@1"] == best["ndcg@1"] == best["mrr"] == 1.0


def test_history_items_are_masked_but_the_target_never_is():
    # one user whose history contains the target item 3 and the top-scored item 1
    seqs = Sequences.from_users(np.array([1, 1, 1, 1]), np.array([1, 3, 2, 3]), np.arange(4), 1)
    cases = EvalCases.at(seqs, np.array([1]), np.array([3]))
    scores = torch.tensor([[0.0, 9.0, 8.0, 5.0, 4.0, 6.0]])  # items 1..5; item 5 beats the target
    got = evaluate(lambda b: scores, seqs, cases, 5, ks=(1, 2), progress=False)
    assert got["hr@1"] == 0.0 and got["hr@2"] == 1.0 and got["mrr"] == 0.5
    unmasked = evaluate(lambda b: scores, seqs, cases, 5, ks=(1,), mask_history=False, progress=False)
    assert unmasked["mrr"] == 1 / 4


def test_scorer_sees_histories_not_targets_and_max_history_keeps_the_latest():
    seqs = random_data(3)
    split = leave_one_out(seqs)
    seen = []

    def spy(batch):
        seen.append(batch)
        return torch.zeros(len(batch.users), N + 1)

    evaluate(spy, seqs, split.test, N, batch_size=8, max_history=4, progress=False)
    batch = seen[0]
    assert batch.history.shape[1] <= 4
    for row in range(len(batch.users)):
        u = int(batch.users[row])
        full = seqs.user(u)[:-1]  # history before the test target
        n = int(batch.lengths[row])
        assert batch.history[row, :n].tolist() == full[-4:].tolist()
        assert batch.history[row, n:].eq(0).all()
        assert int(batch.target_timestamps[row]) == seqs.timestamps[seqs.offsets[u + 1] - 1]


def test_bad_scores_are_refused():
    seqs = random_data(4)
    split = leave_one_out(seqs)
    with pytest.raises(GenrecError, match="shape"):
        evaluate(lambda b: torch.zeros(len(b.users), N), seqs, split.test, N, progress=False)
    with pytest.raises(GenrecError, match="NaN"):
        evaluate(lambda b: torch.full((len(b.users), N + 1), float("nan")), seqs, split.test, N, progress=False)


def test_rank_metrics_formulas():
    metrics = RankMetrics(ks=[1, 3])
    metrics.update(torch.tensor([1, 2, 4]))
    got = metrics.compute()
    assert got["hr@1"] == pytest.approx(1 / 3) and got["hr@3"] == pytest.approx(2 / 3)
    assert got["ndcg@3"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert got["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4) / 3) and got["num_users"] == 3


def test_popularity_on_ml100k_matches_a_python_ranking(ml100k):
    split = leave_one_out(ml100k.sequences)
    model = Popularity(ml100k.num_items).fit(split.train)
    counts = np.bincount(split.train.items, minlength=ml100k.num_items + 1)
    assert model.counts.tolist() == counts.tolist()
    got = evaluate(model, split.sequences, split.test, ml100k.num_items, ks=(10,), progress=False)
    expected, _ = brute_force_popularity(counts, split)
    assert got["hr@10"] == pytest.approx(expected["hr@10"]) and got["mrr"] == pytest.approx(expected["mrr"])
    assert 0.05 < got["hr@10"] < 0.15  # popularity is a weak but real signal on ML-100K


def brute_force_popularity(counts, split):
    ranks = []
    seqs = split.sequences
    for c in range(len(split.test)):
        target = int(split.test.targets[c])
        history = set(seqs.items[split.test.history_start[c] : split.test.history_end[c]].tolist())
        mine = counts[target]
        competitors = [j for j in np.flatnonzero(counts >= mine) if j != target and j != 0 and j not in history]
        ranks.append(1 + len(competitors))
    return {"hr@10": np.mean([r <= 10 for r in ranks]), "mrr": np.mean([1 / r for r in ranks])}, ranks


def test_auto_batch_size_bounds_the_score_matrix_and_a_sequence_models_attention():
    from genrec.eval.evaluator import auto_batch_size

    assert auto_batch_size(1682) == 1024  # small catalogue, no sequence bound: the cap
    assert auto_batch_size(12101) * 12102 <= 1 << 24  # the [B, N+1] score matrix stays within 64 MiB
    rows = auto_batch_size(1682, max_history=200)
    assert 1 <= rows and rows * 200 * 200 <= (1 << 24) // 16  # [B, L, L] attention within 4 MiB of floats
    assert auto_batch_size(1682, max_history=50) > rows
    assert auto_batch_size(10**9) == 1  # never zero rows
