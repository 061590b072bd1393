"""The sequential-model contract, checked the same way for every model (a shared mixin)."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genrec.errors import ConfigError
from genrec.models import HSTU, HSTUConfig, SASRec, SASRecConfig
from genrec.models.hstu import RelativeBias
from genrec.models.hstu_attention import (
    chunked_hstu_attention,
    hstu_attention,
    packed_hstu_attention,
    reference_hstu_attention,
)
from genrec.models.item_encoder import IDEmbedding, ItemEncoder
from genrec.models.layers import Packing

NUM_ITEMS = 60


def random_batch(B=3, L=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, NUM_ITEMS + 1, (B, L), generator=g)
    lengths = torch.tensor([L, L - 5, 1][:B])
    items[torch.arange(L)[None, :] >= lengths[:, None]] = 0
    times = torch.cumsum(torch.randint(0, 5000, (B, L), generator=g), dim=1)
    return items, times, lengths


class ProjectedTable(ItemEncoder):
    """A stand-in item tower (as HLLM's): fixed item features [N+1, 8] through a learned projection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("features", torch.randn(NUM_ITEMS + 1, 8))
        self.project = nn.Linear(8, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.features[ids])


class ContractTests:
    """Every sequential model: causal, blind to padding, [B, L, D] out, consistent item scorer."""

    def make(self, item_encoder=None, **overrides):
        raise NotImplementedError

    def test_shapes_and_item_vectors(self):
        model = self.make().eval()
        items, times, lengths = random_batch()
        out = model.encode(items, times, lengths)
        assert out.shape == (3, 12, model.config.dim) and torch.isfinite(out).all()
        assert model.item_vectors(torch.tensor([[1, 2], [3, 4]])).shape == (2, 2, model.config.dim)
        assert model.all_item_vectors().shape == (NUM_ITEMS + 1, model.config.dim)
        last = model.last_user_vectors(items, times, lengths)
        torch.testing.assert_close(last, out[torch.arange(3), lengths - 1])

    def test_causal(self):
        model = self.make().eval()
        items, times, lengths = random_batch()
        changed = items.clone()
        changed[0, 8] = (changed[0, 8] % NUM_ITEMS) + 1
        a, b = model.encode(items, times, lengths), model.encode(changed, times, lengths)
        torch.testing.assert_close(a[0, :8], b[0, :8])
        assert not torch.allclose(a[0, 8:], b[0, 8:])

    def test_padding_does_not_change_real_positions(self):
        model = self.make().eval()
        items, times, lengths = random_batch()
        wide_items = torch.cat([items, torch.zeros(3, 4, dtype=torch.long)], dim=1)
        wide_times = torch.cat([times, torch.zeros(3, 4, dtype=torch.long)], dim=1)
        short, wide = model.encode(items, times, lengths), model.encode(wide_items, wide_times, lengths)
        for row, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(short[row, :n], wide[row, :n])

    def test_gradients_reach_every_parameter(self):
        model = self.make(dropout=0.0)
        items, times, lengths = random_batch()
        out = model.encode(items, times, lengths)
        (out[items != 0] @ model.all_item_vectors().T).logsumexp(-1).sum().backward()
        missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert missing == []

    def test_a_given_item_encoder_reads_the_inputs_and_scores_the_items(self):
        torch.manual_seed(1)
        encoder = ProjectedTable(16)
        weights = {k: v.clone() for k, v in encoder.state_dict().items()}
        model = self.make(item_encoder=encoder).eval()
        assert model.item_encoder is encoder and not any(isinstance(m, IDEmbedding) for m in model.modules())
        assert all(torch.equal(v, weights[k]) for k, v in encoder.state_dict().items())  # not re-initialised
        ids = torch.arange(NUM_ITEMS + 1)
        torch.testing.assert_close(F.normalize(model.all_item_vectors(), dim=-1), F.normalize(encoder(ids), dim=-1))
        items, times, lengths = random_batch()
        out = model.encode(items, times, lengths)
        with torch.no_grad():
            encoder.project.weight.mul_(2)
        assert not torch.allclose(out, model.encode(items, times, lengths))

    def test_loads_weights_saved_when_the_item_encoder_was_called_item_embedding(self):
        model = self.make()
        saved = {k.replace("item_encoder.", "item_embedding."): v.clone() for k, v in model.state_dict().items()}
        saved["item_embedding.weight"] *= 2
        model.load_state_dict(saved)  # strict
        assert torch.equal(model.item_encoder.weight, saved["item_embedding.weight"])

    def test_rejects_too_long_sequences(self):
        model = self.make(max_len=8)
        items, times, lengths = random_batch()
        with pytest.raises(ValueError, match="exceeds max_len"):
            model.encode(items, times, lengths.clamp(max=8))


class TestSASRec(ContractTests):
    def make(self, item_encoder=None, **overrides):
        torch.manual_seed(0)
        config = SASRecConfig(**{"max_len": 16, "dim": 16, "num_heads": 2, **overrides})
        return SASRec(NUM_ITEMS, config, item_encoder)


class TestHSTU(ContractTests):
    def make(self, item_encoder=None, **overrides):
        torch.manual_seed(0)
        config = {"max_len": 16, "dim": 16, "num_heads": 2, "attention_dim": 8, "value_dim": 8, **overrides}
        return HSTU(NUM_ITEMS, HSTUConfig(**config), item_encoder)

    def test_outputs_are_unit_vectors_and_time_matters(self):
        model = self.make().eval()
        items, times, lengths = random_batch()
        out = model.encode(items, times, lengths)
        torch.testing.assert_close(out[items != 0].norm(dim=-1), torch.ones(int((items != 0).sum())))
        later = times.clone()
        later[:, 3:] += 10**6  # a long gap before the 4th event
        assert not torch.allclose(out[0, 5], model.encode(items, later, lengths)[0, 5])
        no_time = self.make(time_buckets=0).eval()
        torch.testing.assert_close(no_time.encode(items, times, lengths), no_time.encode(items, later, lengths))


def loop_attention(q, k, v, bias, n):
    """HSTU attention written with explicit loops: out_i = sum_{j<=i} silu(q_i.k_j + b_ij) / n * v_j."""
    B, H, L, _ = q.shape
    out = torch.zeros(B, H, L, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            for i in range(L):
                for j in range(i + 1):
                    w = torch.nn.functional.silu(q[b, h, i] @ k[b, h, j] + bias[b, 0, i, j]) / n
                    out[b, h, i] += w * v[b, h, j]
    return out


def attention_inputs(B=2, H=2, L=7, dqk=4, dv=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype, requires_grad=True)  # noqa: E731
    return make(B, H, L, dqk), make(B, H, L, dqk), make(B, H, L, dv), make(B, 1, L, L)


def test_reference_attention_matches_the_formula():
    q, k, v, bias = attention_inputs()
    torch.testing.assert_close(reference_hstu_attention(q, k, v, bias, 10), loop_attention(q, k, v, bias, 10))


@pytest.mark.parametrize("shape", [(2, 1, 9, 8, 8), (3, 2, 5, 4, 6)])
def test_compiled_kernel_matches_reference_outputs_and_gradients(shape):
    B, H, L, dqk, dv = shape
    inputs = attention_inputs(B, H, L, dqk, dv, dtype=torch.float32)
    grad = torch.randn(B, H, L, dv)
    ref = hstu_attention(*inputs, 16, kernel="reference")
    ref_grads = torch.autograd.grad(ref, inputs, grad)
    inputs2 = [t.detach().clone().requires_grad_(True) for t in inputs]
    fast = hstu_attention(*inputs2, 16, kernel="compiled")
    fast_grads = torch.autograd.grad(fast, inputs2, grad)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(fast_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 4, 16])
@pytest.mark.parametrize("sorted_lengths", [True, False])
@pytest.mark.parametrize("shared_bias", [True, False])
def test_chunked_kernel_matches_reference_at_real_positions(chunk, sorted_lengths, shared_bias):
    B, H, L, dqk, dv = 4, 2, 9, 4, 3
    q, k, v, bias = attention_inputs(B, H, L, dqk, dv)
    if shared_bias:
        bias = bias[:1].detach().clone().requires_grad_(True)
    lengths = torch.tensor([9, 6, 3, 1] if sorted_lengths else [3, 9, 1, 6])
    real = (torch.arange(L)[None, :] < lengths[:, None]).to(q.dtype)[:, None, :, None]  # [B, 1, L, 1]
    grad = torch.randn(B, H, L, dv, dtype=q.dtype, generator=torch.Generator().manual_seed(1)) * real
    ref = reference_hstu_attention(q, k, v, bias, 16)
    ref_grads = torch.autograd.grad(ref, (q, k, v, bias), grad)
    out = chunked_hstu_attention(q, k, v, bias, 16, lengths=lengths, chunk=chunk)
    grads = torch.autograd.grad(out, (q, k, v, bias), grad)
    torch.testing.assert_close(out * real, ref * real)
    for name, a, b in zip("qkvb", grads, ref_grads):
        torch.testing.assert_close(a, b, msg=f"gradient of {name}")
    if sorted_lengths:  # rows with no position in a chunk are skipped: their padding outputs are 0
        assert torch.all(out[3, :, chunk:] == 0)  # row 3 has 1 position: chunks after the first skip it


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_chunked_kernel_gradcheck(dropout_p):
    """The hand-written backward against finite differences, with dropout too (the generator is
    re-seeded before every forward, so each one draws the same mask)."""
    q, k, v, bias = attention_inputs(3, 2, 7, 3, 2)
    lengths = torch.tensor([7, 5, 2])

    real = (torch.arange(7)[None, :] < lengths[:, None]).to(q.dtype)[:, None, :, None]

    def attention(q, k, v, bias, p=dropout_p):
        torch.manual_seed(0)
        return chunked_hstu_attention(q, k, v, bias, 5, p, lengths, chunk=3) * real

    assert torch.autograd.gradcheck(attention, (q, k, v, bias))
    if dropout_p:  # the mask drops some weights: the output differs from the dropout-free one
        assert not torch.allclose(attention(q, k, v, bias), attention(q, k, v, bias, p=0.0))


def test_chunked_kernel_without_lengths_is_the_reference():
    q, k, v, bias = attention_inputs(3, 1, 11, 4, 5)
    torch.testing.assert_close(
        hstu_attention(q, k, v, bias, 8, kernel="chunked"), reference_hstu_attention(q, k, v, bias, 8)
    )
    with pytest.raises(ValueError, match="lengths"):
        hstu_attention(q, k, v, bias, 8, kernel="chunked", lengths=torch.tensor([3, 2]))


@pytest.mark.parametrize("terms", ["position and time", "position", "time"])
@pytest.mark.parametrize("sorted_lengths", [True, False])
def test_chunked_bias_matches_the_materialised_bias(terms, sorted_lengths):
    """The bias built per chunk inside the kernel (ChunkedBias) against RelativeBias's [B, 1, L, L]
    tensor through the reference: outputs at real positions, gradients of q, k, v and both tables."""
    torch.manual_seed(0)
    B, H, L = 4, 2, 11
    relative_bias = RelativeBias(
        max_len=12, time_buckets=0 if terms == "position" else 8, position_bias=terms != "time"
    ).double()
    tables = list(relative_bias.parameters())
    q, k, v, _ = attention_inputs(B, H, L, 4, 3)
    lengths = torch.tensor([11, 8, 4, 1] if sorted_lengths else [4, 11, 1, 8])
    times = torch.randint(0, 10**6, (B, L)).sort(dim=1).values
    query = times + torch.randint(1, 10**4, (B, L))
    real = (torch.arange(L)[None, :] < lengths[:, None]).to(q.dtype)[:, None, :, None]
    grad = torch.randn(B, H, L, 3, dtype=q.dtype) * real
    ref = reference_hstu_attention(q, k, v, relative_bias(times, query), 16)
    ref_grads = torch.autograd.grad(ref, (q, k, v, *tables), grad)
    lazy = relative_bias.chunked(times, query, lengths, chunk=3)
    if sorted_lengths:  # chunks past a row's length leave that row out: 4 chunks, rows 4, 3, 2, 1 of them
        assert lazy.row_counts == [4, 3, 2, 1]
    out = chunked_hstu_attention(q, k, v, lazy, 16)
    grads = torch.autograd.grad(out, (q, k, v, *tables), grad)
    torch.testing.assert_close(out * real, ref * real)
    for name, a, b in zip(["q", "k", "v", *(n for n, _ in relative_bias.named_parameters())], grads, ref_grads):
        torch.testing.assert_close(a, b, msg=f"gradient of {name}")
    with pytest.raises(ValueError, match="chunked kernel"):
        hstu_attention(q, k, v, lazy, 16, kernel="reference")


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_packed_attention_matches_the_padded_chunked_kernel(heads, dropout_p):
    """packed_hstu_attention on [T, H * d] column slices of one projection (as HSTU's block gives
    them) against chunked_hstu_attention on the padded [B, H, L, d] copies: outputs, the projection's
    gradient, and both bias tables' gradients; the same attention-dropout draws."""
    torch.manual_seed(1)
    B, L, dqk, dv = 4, 11, 3, 2
    relative_bias = RelativeBias(max_len=12, time_buckets=8, position_bias=True).double()
    tables = list(relative_bias.parameters())
    lengths = torch.tensor([11, 8, 4, 1])
    items = (torch.arange(L)[None, :] < lengths[:, None]).long()
    packing = Packing.of(items)
    times = torch.randint(0, 10**6, (B, L)).sort(dim=1).values
    projection = torch.randn(packing.index.shape[0], heads * (dv + 2 * dqk), dtype=torch.float64, requires_grad=True)
    grad = torch.randn(packing.index.shape[0], heads * dv, dtype=torch.float64)

    def packed() -> torch.Tensor:
        v, q, k = projection.split([heads * dv, heads * dqk, heads * dqk], dim=1)
        lazy = relative_bias.chunked(times, times + 7, lengths, chunk=3)
        return packed_hstu_attention(q, k, v, lazy, 16, packing, heads, dropout_p)

    def padded() -> torch.Tensor:
        v, q, k = packing.pad(projection).split([heads * dv, heads * dqk, heads * dqk], dim=2)
        q, k = (t.reshape(B, L, heads, dqk).transpose(1, 2) for t in (q, k))
        v = v.reshape(B, L, heads, dv).transpose(1, 2)
        lazy = relative_bias.chunked(times, times + 7, lengths, chunk=3)
        out = chunked_hstu_attention(q, k, v, lazy, 16, dropout_p)  # [B, H, L, dv]
        return packing.pack(out.transpose(1, 2).reshape(B, L, heads * dv))

    results = []
    for fn in (packed, padded):
        torch.manual_seed(2)  # the same dropout draws: both run the same chunks in the same order
        out = fn()
        results.append((out, *torch.autograd.grad(out, (projection, *tables), grad)))
    for name, a, b in zip(["output", "projection", "position table", "time table"], *results):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(ValueError, match="tokens for a packing"):
        v, q, k = projection[1:].split([heads * dv, heads * dqk, heads * dqk], dim=1)
        packed_hstu_attention(q, k, v, relative_bias.chunked(times, times, lengths, chunk=3), 16, packing, heads)


def test_hstu_trains_the_same_with_the_chunked_and_the_reference_kernel():
    """The whole model: same user vectors at real positions and the same parameter gradients."""
    torch.manual_seed(0)
    config = HSTUConfig(max_len=12, dim=8, num_blocks=2, num_heads=2, attention_dim=4, value_dim=4, dropout=0.0)
    chunked = HSTU(30, replace(config, kernel="chunked")).double()
    reference = HSTU(30, replace(config, kernel="reference")).double()
    reference.load_state_dict(chunked.state_dict())
    lengths = torch.tensor([12, 7, 5, 2])
    items = torch.randint(1, 30, (4, 12)) * (torch.arange(12)[None, :] < lengths[:, None])
    times = torch.arange(12).repeat(4, 1) * 1000
    real = (items != 0)[..., None]
    outs = []
    for model in (chunked, reference):
        hidden = model.encode(items, times, lengths) * real
        hidden.pow(2).sum().backward()
        outs.append((hidden.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    assert outs[0][1].keys() == outs[1][1].keys()
    for name in outs[0][1]:
        torch.testing.assert_close(outs[0][1][name], outs[1][1][name], msg=name)


def test_relative_bias_buckets_and_positions():
    bias = RelativeBias(max_len=4, time_buckets=8, position_bias=True)
    with torch.no_grad():
        bias.position_weights.copy_(torch.arange(7, dtype=torch.float32) * 100)  # index (j - i) + 3
        bias.time_weights.copy_(torch.arange(9, dtype=torch.float32))
    times = torch.tensor([[0, 1, 10, 10_000]])
    query = torch.tensor([[1, 10, 10_000, 10**9]])
    out = bias(times, query)[0, 0]
    for i in range(4):
        for j in range(4):
            gap = max(abs(int(query[0, i]) - int(times[0, j])), 1)
            bucket = min(int(math.log(gap) / 0.301), 8)
            assert out[i, j].item() == pytest.approx((j - i + 3) * 100 + bucket)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_table_lookup_matches_indexing_in_values_and_gradients(dtype):
    from genrec.models.layers import table_lookup

    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(11, dtype=dtype, generator=generator, requires_grad=True)
    index = torch.randint(0, 11, (3, 1, 7, 7), generator=generator)
    index[0, 0, 0, 0] = 10  # the last entry, so minlength matters only when it is absent elsewhere
    index[1] = 4  # a heavily repeated entry
    grad = torch.randn(index.shape, dtype=dtype, generator=generator)
    reference = weights[index]
    (reference_grad,) = torch.autograd.grad(reference, weights, grad)
    fast = table_lookup(weights, index)
    (fast_grad,) = torch.autograd.grad(fast, weights, grad)
    assert torch.equal(fast, reference)
    assert fast_grad.dtype == dtype
    torch.testing.assert_close(fast_grad, reference_grad)
    unused = torch.randint(0, 5, (4, 4), generator=generator)  # entries 5..10 get a zero gradient
    (sparse_grad,) = torch.autograd.grad(table_lookup(weights, unused).sum(), weights)
    assert sparse_grad.shape == weights.shape and sparse_grad[5:].abs().sum() == 0


def test_relative_bias_gradients_match_plain_indexing():
    torch.manual_seed(0)
    bias = RelativeBias(max_len=6, time_buckets=8, position_bias=True)
    times = torch.randint(0, 10**6, (2, 6)).sort(dim=1).values
    query = times + torch.randint(1, 1000, (2, 6))
    grad = torch.randn(2, 1, 6, 6)
    fast_grads = torch.autograd.grad(bias(times, query), [bias.position_weights, bias.time_weights], grad)
    positions = torch.arange(6)
    relative = positions[None, :] - positions[:, None] + 5
    buckets = (
        (torch.log((query[:, :, None] - times[:, None, :]).abs().clamp(min=1).float()) / 0.301).long().clamp(max=8)
    )
    plain = bias.position_weights[relative] + bias.time_weights[buckets].unsqueeze(1)
    plain_grads = torch.autograd.grad(plain, [bias.position_weights, bias.time_weights], grad)
    for fast, reference in zip(fast_grads, plain_grads):
        torch.testing.assert_close(fast, reference)


@pytest.mark.parametrize("chunk_rows", [1, 2, 64])
def test_scorer_gives_the_same_scores_in_any_chunking(chunk_rows):
    from genrec.eval.evaluator import EvalBatch
    from genrec.models import SequentialScorer

    model = HSTU(NUM_ITEMS, HSTUConfig(max_len=12, dim=16, attention_dim=8, value_dim=8, dropout=0.0)).eval()
    items, times, lengths = random_batch()
    order = torch.tensor([1, 2, 0])  # lengths 7, 1, 12: the scorer sorts them and must put them back
    items, times, lengths = items[order], times[order], lengths[order]
    batch = EvalBatch(
        users=torch.arange(1, 4),
        history=items,
        history_timestamps=times,
        lengths=lengths,
        target_timestamps=times.max(dim=1).values + 100,
    )
    whole = SequentialScorer(model, chunk_rows=1000)(batch)
    torch.testing.assert_close(SequentialScorer(model, chunk_rows=chunk_rows)(batch), whole, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # each row alone, in the batch's order
        alone = torch.cat(
            [
                model.last_user_vectors(
                    items[r : r + 1, :n], times[r : r + 1, :n], lengths[r : r + 1], batch.target_timestamps[r : r + 1]
                )
                for r, n in enumerate(lengths.tolist())
            ]
        )
    torch.testing.assert_close(
        SequentialScorer(model, chunk_rows=chunk_rows).user_vectors(batch), alone, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("kernel", ["chunked", "reference"])
def test_packed_tokens_match_the_padded_layout(kernel):
    """Per-token work on real positions only (token_layout=packed): the same user vectors at real
    positions, zeros at padding, and the same parameter gradients as the padded layout."""
    torch.manual_seed(0)
    config = HSTUConfig(max_len=12, dim=8, num_blocks=2, num_heads=2, attention_dim=4, value_dim=3, dropout=0.0)
    packed = HSTU(30, replace(config, kernel=kernel, token_layout="packed")).double()
    padded = HSTU(30, replace(config, kernel=kernel, token_layout="padded")).double()
    padded.load_state_dict(packed.state_dict())
    assert packed.packs_tokens(torch.device("cpu")) and not padded.packs_tokens(torch.device("cpu"))
    lengths = torch.tensor([12, 9, 5, 1])
    items = torch.randint(1, 30, (4, 12)) * (torch.arange(12)[None, :] < lengths[:, None])
    times = torch.randint(0, 10**6, (4, 12)).sort(dim=1).values
    real = (items != 0)[..., None]
    outs = []
    for model in (packed, padded):
        hidden = model.encode(items, times, lengths, times + 500)
        (hidden * real * torch.linspace(-1, 1, 8, dtype=torch.float64)).sum().backward()
        outs.append((hidden.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    assert torch.all(outs[0][0][~real.squeeze(-1)] == 0)
    torch.testing.assert_close(outs[0][0] * real, outs[1][0] * real)
    assert outs[0][1].keys() == outs[1][1].keys()
    for name in outs[0][1]:
        torch.testing.assert_close(outs[0][1][name], outs[1][1][name], msg=name)


def test_packing_round_trip_and_gradients():
    items = torch.tensor([[3, 4, 0], [5, 0, 0], [6, 7, 8]])
    packing = Packing.of(items)
    assert packing.index.tolist() == [0, 1, 3, 6, 7, 8]
    assert packing.positions.tolist() == [0, 1, 0, 0, 1, 2]
    padded = torch.randn(3, 3, 2, dtype=torch.float64, requires_grad=True)
    packed = packing.pack(padded)
    torch.testing.assert_close(packed, padded[items != 0])
    restored = packing.pad(packed)
    torch.testing.assert_close(restored, padded * (items != 0)[..., None])
    assert torch.autograd.gradcheck(lambda t: packing.pad(packing.pack(t) * 2), (padded,))


def test_token_layout_auto_packs_with_the_chunked_kernel_only():
    cpu = torch.device("cpu")
    config = HSTUConfig(max_len=8, dim=4, num_blocks=1, attention_dim=4, value_dim=4)
    assert HSTU(10, replace(config, kernel="chunked")).packs_tokens(cpu)
    assert HSTU(10, replace(config, kernel="auto")).packs_tokens(cpu)
    assert not HSTU(10, replace(config, kernel="reference")).packs_tokens(cpu)
    assert not HSTU(10, replace(config, kernel="chunked", token_layout="padded")).packs_tokens(cpu)
    with pytest.raises(ConfigError, match="token_layout"):
        HSTUConfig(token_layout="jagged")
