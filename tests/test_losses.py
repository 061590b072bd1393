"""Losses against their formulas written out by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from genrec.models import SASRec, SASRecConfig
from genrec.train.losses import FullSoftmaxLoss, InBatchNegatives, NegativeSampler, SampledSoftmaxLoss, UniformNegatives

N = 20


class FixedNegatives(NegativeSampler):
    """Returns the negatives it was given, so the loss can be checked by hand."""

    def __init__(self, negatives):
        self.negatives = negatives
        self.num_negatives = negatives.shape[1]

    def sample(self, positives):
        return self.negatives, None


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SASRec(N, SASRecConfig(max_len=4, dim=8, l2_norm=True))


def test_full_softmax_is_cross_entropy_over_real_items(model):
    users = torch.randn(5, 8)
    positives = torch.tensor([1, 4, 4, 20, 7])
    table = model.all_item_vectors().detach()
    expected = 0.0
    for p in range(5):
        logits = [float(users[p] @ table[j]) for j in range(1, N + 1)]
        expected += -(logits[positives[p] - 1] - math.log(sum(math.exp(x) for x in logits)))
    assert FullSoftmaxLoss()(users, positives, model).item() == pytest.approx(expected / 5, rel=1e-5)


@pytest.mark.parametrize("score_all_items", [True, False])
def test_sampled_softmax_masks_negatives_equal_to_the_positive(model, score_all_items):
    users = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    positives = torch.tensor([2, 5, 9])
    negatives = torch.tensor([[2, 3, 4], [1, 5, 5], [7, 8, 10]])  # rows 0 and 1 drew their positive
    loss_fn = SampledSoftmaxLoss(FixedNegatives(negatives), temperature=0.1, score_all_items=score_all_items)
    table = model.all_item_vectors().detach()
    expected = 0.0
    for p in range(3):
        pos = float(users[p] @ table[positives[p]]) / 0.1
        negs = [float(users[p] @ table[j]) / 0.1 for j in negatives[p].tolist() if j != positives[p]]
        expected += -(pos - math.log(math.exp(pos) + sum(math.exp(x) for x in negs)))
    assert loss_fn(users, positives, model).item() == pytest.approx(expected / 3, rel=1e-5)


def test_sampled_softmax_paths_give_the_same_loss_and_gradients(model):
    users = torch.randn(6, 8, requires_grad=True)
    positives = torch.randint(1, N + 1, (6,))
    negatives = torch.randint(1, N + 1, (6, 4))
    results = []
    for score_all in (True, False):
        model.zero_grad()
        users.grad = None
        loss = SampledSoftmaxLoss(FixedNegatives(negatives), 0.05, score_all_items=score_all)(users, positives, model)
        loss.backward()
        results.append((loss.detach(), users.grad.clone(), model.item_encoder.weight.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_in_batch_negatives_apply_the_log_q_correction(model):
    torch.manual_seed(1)
    users = torch.randn(4, 8)
    positives = torch.tensor([3, 3, 3, 6])  # item 3 is 3/4 of the batch
    sampler = InBatchNegatives(N, num_negatives=5)
    loss = SampledSoftmaxLoss(sampler, temperature=1.0)
    torch.manual_seed(2)
    value = loss(users, positives, model)
    torch.manual_seed(2)
    sampler.prepare(positives)
    negatives, log_q = sampler.sample(positives)
    assert set(negatives.flatten().tolist()) <= {3, 6}
    torch.testing.assert_close(log_q, torch.where(negatives == 3, math.log(0.75), math.log(0.25)))
    table = model.all_item_vectors().detach()
    expected = 0.0
    for p in range(4):
        pos = float(users[p] @ table[positives[p]]) - math.log(0.75 if positives[p] == 3 else 0.25)
        terms = [math.exp(pos)]
        for j, lq in zip(negatives[p].tolist(), log_q[p].tolist()):
            if j != positives[p]:
                terms.append(math.exp(float(users[p] @ table[j]) - lq))
        expected += -(pos - math.log(sum(terms)))
    assert value.item() == pytest.approx(expected / 4, rel=1e-5)


def test_uniform_negatives_cover_real_items_only():
    torch.manual_seed(0)
    ids, log_q = UniformNegatives(N, 64).sample(torch.ones(50, dtype=torch.long))
    assert ids.shape == (50, 64) and log_q is None
    assert ids.min() >= 1 and ids.max() <= N and len(ids.unique()) == N


def test_default_temperature_follows_whether_the_model_normalises():
    from genrec.config import LossConfig
    from genrec.models import HSTU, HSTUConfig, SASRec, SASRecConfig
    from genrec.train.objectives import build_loss

    hstu = HSTU(10, HSTUConfig(max_len=4, dim=8, attention_dim=4, value_dim=4))
    plain, normed = SASRec(10, SASRecConfig(max_len=4, dim=8)), SASRec(10, SASRecConfig(max_len=4, dim=8, l2_norm=True))
    assert build_loss(LossConfig(name="full"), hstu).temperature == 0.05
    assert build_loss(LossConfig(name="full"), plain).temperature == 1.0
    assert build_loss(LossConfig(name="sampled"), normed).temperature == 0.05
    assert build_loss(LossConfig(name="in-batch", temperature=0.2), hstu).temperature == 0.2


@pytest.mark.parametrize("rows", [1, 7, 16, 64])
def test_blocked_sampled_scores_match_the_reference_in_values_and_gradients(rows):
    from genrec.train.blocked_scores import blocked_sampled_scores, reference_sampled_scores

    generator = torch.Generator().manual_seed(rows)
    P, N, D, K = 37, 23, 8, 12
    users = torch.randn(P, D, generator=generator, dtype=torch.float64)
    table = torch.randn(N, D, generator=generator, dtype=torch.float64)
    index = torch.randint(0, N, (P, K), generator=generator)
    index[:, 1] = index[:, 0]  # duplicates within a row must add their gradients up
    upstream = torch.randn(P, K, generator=generator, dtype=torch.float64)
    results = []
    for fn in (reference_sampled_scores, lambda u, t, i: blocked_sampled_scores(u, t, i, rows=rows)):
        u, t = users.clone().requires_grad_(), table.clone().requires_grad_()
        scores = fn(u, t, index)
        (scores * upstream).sum().backward()
        results.append((scores.detach(), u.grad, t.grad))
    for ref, fast in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    # and torch's own numerical check of the hand-written backward
    u, t = users[:5].clone().requires_grad_(), table.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: blocked_sampled_scores(a, b, index[:5], rows=2), (u, t))


def test_blocked_sampled_scores_reject_mismatched_shapes():
    from genrec.train.blocked_scores import blocked_sampled_scores

    with pytest.raises(ValueError, match=r"users \[P, D\]"):
        blocked_sampled_scores(torch.randn(4, 3), torch.randn(5, 2), torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="3 rows for 4 users"):
        blocked_sampled_scores(torch.randn(4, 3), torch.randn(5, 3), torch.zeros(3, 2, dtype=torch.long))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("rows", [1, 5, 16, 64])
@pytest.mark.parametrize("normalised", [False, True], ids=["row-max-shift", "shift-free"])
def test_blocked_softmax_cross_entropy_matches_the_reference_in_values_and_gradients(rows, reduction, normalised):
    """Both paths of the blocked loss: unnormalised vectors at T 0.1 (logits past SHIFT_FREE_BITS:
    each row's maximum is subtracted) and L2-normalised ones at T 0.05 (exponentiated unshifted)."""
    from genrec.train.blocked_scores import (
        LOG2_E,
        blocked_softmax_cross_entropy,
        logits_are_bounded,
        reference_softmax_cross_entropy,
    )

    generator = torch.Generator().manual_seed(rows)
    P, N, D = 29, 31, 8
    users = torch.randn(P, D, generator=generator, dtype=torch.float64)
    table = torch.randn(N, D, generator=generator, dtype=torch.float64)
    temperature = 0.1
    if normalised:
        users, table, temperature = F.normalize(users, dim=1), F.normalize(table, dim=1), 0.05
    assert logits_are_bounded(users * LOG2_E / temperature, table) == normalised
    positives = torch.randint(1, N, (P,), generator=generator)
    assert positives.unique().numel() < P  # repeated positives: their table gradients add up
    upstream = 0.7  # backward must scale the gradients it stored by the upstream value
    results = []
    for fn in (reference_softmax_cross_entropy, blocked_softmax_cross_entropy):
        u, t = users.clone().requires_grad_(), table.clone().requires_grad_()
        kwargs = {"rows": rows} if fn is blocked_softmax_cross_entropy else {}
        loss = fn(u, t, positives, temperature, reduction, **kwargs)
        (loss * upstream).backward()
        results.append((loss.detach(), u.grad, t.grad))
    for ref, fast in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
    assert results[1][2][0].abs().max() == 0  # the padding row is never a class
    with torch.no_grad():  # evaluation: the same value, no gradient work
        value = blocked_softmax_cross_entropy(users, table, positives, temperature, reduction, rows=rows)
    torch.testing.assert_close(value, results[0][0], rtol=1e-10, atol=1e-10)


def test_blocked_softmax_cross_entropy_is_stable_with_large_logits_in_float32():
    """Logits in the hundreds (unnormalised vectors, a small temperature) overflow a naive exp; the
    blocked loss subtracts each row's maximum as F.cross_entropy does."""
    from genrec.train.blocked_scores import blocked_softmax_cross_entropy, reference_softmax_cross_entropy

    generator = torch.Generator().manual_seed(3)
    users, table = torch.randn(40, 16, generator=generator) * 3, torch.randn(300, 16, generator=generator) * 3
    positives = torch.randint(1, 300, (40,), generator=generator)
    grads = []
    for fn in (reference_softmax_cross_entropy, blocked_softmax_cross_entropy):
        u, t = users.clone().requires_grad_(), table.clone().requires_grad_()
        loss = fn(u, t, positives, 0.02)
        loss.backward()
        assert torch.isfinite(loss) and loss > 10  # logits / 0.02 reach the hundreds
        grads.append((loss.detach(), u.grad, t.grad))
    for ref, fast in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)


def test_blocked_softmax_cross_entropy_unshifted_keeps_float32_precision_at_the_bound():
    """The shift-free path in float32 where it is hardest: unit vectors, T 0.05 (logits within
    +-28.9 bits), positives that are the items least like their user (each row's smallest logit)."""
    from genrec.train.blocked_scores import (
        LOG2_E,
        blocked_softmax_cross_entropy,
        logits_are_bounded,
        reference_softmax_cross_entropy,
    )

    generator = torch.Generator().manual_seed(5)
    users = F.normalize(torch.randn(64, 16, generator=generator), dim=1)
    table = F.normalize(torch.randn(500, 16, generator=generator), dim=1)
    assert logits_are_bounded(users * LOG2_E / 0.05, table)
    positives = (users @ table[1:].T).argmin(dim=1) + 1
    grads = []
    for fn in (reference_softmax_cross_entropy, blocked_softmax_cross_entropy):
        u, t = users.clone().requires_grad_(), table.clone().requires_grad_()
        loss = fn(u, t, positives, 0.05)
        loss.backward()
        assert loss > 20  # each positive is about 30 nats behind its row's best item
        grads.append((loss.detach(), u.grad, t.grad))
    for ref, fast in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)


def test_full_softmax_loss_trains_the_item_table_through_the_blocked_path(model):
    users = torch.randn(6, 8, requires_grad=True)
    positives = torch.tensor([1, 2, 3, 3, 9, 20])
    loss = FullSoftmaxLoss(temperature=0.5)(users, positives, model)
    loss.backward()
    table_grad = model.item_encoder.weight.grad
    assert users.grad is not None and users.grad.abs().sum() > 0
    assert table_grad is not None and table_grad[positives].abs().sum() > 0


def test_gathered_sampled_softmax_gradients_repeat_exactly_on_two_threads():
    """The gather path's table gradient sums many repeated rows; it must not depend on thread timing
    (plain indexing's accumulating backward differed in the last bits from run to run at 2 threads,
    so a resumed run could not repeat an uninterrupted one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        model = SASRec(1700, SASRecConfig(max_len=4, dim=16, l2_norm=True))
        users = torch.randn(3000, 16)
        positives = torch.randint(1, 1701, (3000,))
        grads = []
        for _ in range(4):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(1)  # the same negatives every time
            loss = SampledSoftmaxLoss(UniformNegatives(1700, 64), 0.05, score_all_items=False)
            loss(users, positives, model).backward()
            grads.append(model.item_encoder.weight.grad.clone())
        assert grads[0].abs().sum() > 0
        for grad in grads[1:]:
            assert torch.equal(grad, grads[0])
    finally:
        torch.set_num_threads(threads)
