"""Ranking-stage metrics (AUC, GAUC, log loss, RMSE) and the two-stage retrieve-then-rerank evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genrec.data.splits import leave_one_out
from genrec.eval.evaluator import evaluate
from genrec.eval.ranking_metrics import auc, average_ranks, gauc, log_loss, rmse
from genrec.eval.two_stage import evaluate_two_stage, reranked_ranks, standardised
from genrec.models.popularity import Popularity


def test_auc_and_gauc_match_hand_computed_values():
    # positives 0.9 and 0.3 against negatives 0.8 and 0.3: 0.9 beats both, 0.3 loses one and ties one
    assert auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.3])) == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert auc(np.array([1, 1, 0]), np.array([3.0, 2.0, 1.0])) == 1.0
    assert math.isnan(auc(np.array([1, 1]), np.array([0.1, 0.2])))  # one class: undefined
    assert average_ranks(np.array([5.0, 1.0, 5.0, 3.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    users = np.array([7, 7, 7, 2, 2, 9, 9])
    labels = np.array([1, 0, 0, 0, 1, 1, 1])  # user 9 has positives only and is left out
    scores = np.array([0.5, 0.9, 0.1, 0.2, 0.4, 0.3, 0.6])
    value, counted = gauc(users, labels, scores)
    assert counted == 2 and value == pytest.approx((0.5 + 1.0) / 2)  # user 7: beats 0.1, loses to 0.9; user 2: 1
    # a global AUC mixes users: here it differs from the per-user mean
    assert auc(labels, scores) != pytest.approx(value)


def test_log_loss_and_rmse():
    assert log_loss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert log_loss(np.array([1]), np.array([0.0])) == pytest.approx(-math.log(1e-7))  # clipped, finite
    assert rmse(np.array([4.0, 2.0]), np.array([3.0, 4.0])) == pytest.approx(math.sqrt((1 + 4) / 2))


def test_reranking_a_hand_built_list():
    # items 1..5 scored 5..1 by retrieval; item 1 is in the history (masked); top 3 = items 2, 3, 4
    scores = torch.tensor([[0.0, 5, 4, 3, 2, 1], [0.0, 5, 4, 3, 2, 1]])
    history_rows, history_items = torch.tensor([0, 1]), torch.tensor([1, 1])
    reverse = lambda top: -scores.gather(1, top)  # noqa: E731 (the ranker prefers low retrieval scores)
    ranks = reranked_ranks(scores, torch.tensor([3, 5]), history_rows, history_items, reverse, candidates=3)
    # target 3 is second after item 4 once reversed; target 5 (retrieval rank 4) is not retrieved
    assert ranks.tolist() == [2.0, math.inf]
    same = lambda top: scores.gather(1, top)  # noqa: E731
    assert reranked_ranks(scores, torch.tensor([3, 5]), history_rows, history_items, same, 3).tolist() == [
        2.0,
        math.inf,
    ]
    # a tie with the last retrieved item is a miss (pessimistic), as the evaluator would rank it 4th
    tied = torch.tensor([[0.0, 5, 4, 3, 3, 1]])
    none = torch.zeros(0, dtype=torch.long)
    assert reranked_ranks(tied, torch.tensor([4]), none, none, lambda top: tied.gather(1, top), 3).tolist() == [
        math.inf
    ]


def test_blending_standardises_both_stages_over_the_retrieved_candidates():
    real = torch.tensor([[True, True, True, False]])
    z = standardised(torch.tensor([[1.0, 2.0, 3.0, 100.0]]), real)
    torch.testing.assert_close(z[:, :3], torch.tensor([[-1.0, 0.0, 1.0]]) * (1.5**0.5))  # the 100 is not counted
    scores = torch.tensor([[0.0, 5, 4, 3, 2, 1]])
    none = torch.zeros(0, dtype=torch.long)
    reverse = lambda top: -scores.gather(1, top) * 1000  # noqa: E731 (the ranker's order is the opposite)
    # target 1 is first by retrieval and last by the ranker (of 3): the blend moves it with the weight
    target = torch.tensor([1])
    assert reranked_ranks(scores, target, none, none, reverse, 3).tolist() == [3.0]
    assert reranked_ranks(scores, target, none, none, reverse, 3, retrieval_weight=0.5).tolist() == [3.0]
    assert reranked_ranks(scores, target, none, none, reverse, 3, retrieval_weight=2.0).tolist() == [1.0]


@pytest.mark.parametrize("candidates", [50, 200])
def test_two_stage_with_the_retrieval_score_as_ranker_equals_the_evaluator(ml100k, candidates):
    split = leave_one_out(ml100k.sequences)
    popularity = Popularity(ml100k.num_items).fit(split.train)  # many ties: the pessimistic rule matters
    ks = [k for k in (1, 5, 10, 50, 200) if k <= candidates]
    full = evaluate(popularity, split.sequences, split.test, ml100k.num_items, ks=ks, progress=False)
    two = evaluate_two_stage(
        popularity,
        lambda batch, top: popularity(batch).gather(1, top),
        split.sequences,
        split.test,
        ml100k.num_items,
        candidates=candidates,
        ks=ks,
        progress=False,
    )
    for k in ks:
        assert two[f"hr@{k}"] == pytest.approx(full[f"hr@{k}"], abs=1e-12)
        assert two[f"ndcg@{k}"] == pytest.approx(full[f"ndcg@{k}"], abs=1e-12)
    assert two[f"recall@{candidates}"] == pytest.approx(full[f"hr@{candidates}"], abs=1e-12)
    assert two["mrr"] <= full["mrr"]  # targets beyond the cut count 0 instead of 1 / rank
    # a ranker that scores at random cannot keep the retrieval order: fewer top-10 hits
    generator = torch.Generator().manual_seed(0)
    shuffled = evaluate_two_stage(
        popularity,
        lambda batch, top: torch.rand(top.shape, generator=generator),
        split.sequences,
        split.test,
        ml100k.num_items,
        candidates=candidates,
        ks=ks,
        progress=False,
    )
    assert shuffled["ndcg@10"] < full["ndcg@10"] and shuffled[f"recall@{candidates}"] == two[f"recall@{candidates}"]
