"""Layers shared by the sequential models."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from genrec.models.dropout import Dropout


class CausalSelfAttention(nn.Module):
    """Softmax multi-head self-attention with a causal mask (SASRec).

    Inputs are right-padded, so the causal mask alone keeps real positions from seeing padding.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, query_input: torch.Tensor, key_input: torch.Tensor) -> torch.Tensor:
        """query_input, key_input: [B, L, D] -> [B, L, D]."""
        B, L, D = query_input.shape
        H = self.num_heads
        w_q, w_kv = self.qkv.weight.split([D, 2 * D]), self.qkv.bias.split([D, 2 * D])
        q = F.linear(query_input, w_q[0], w_kv[0])  # [B, L, D]
        k, v = F.linear(key_input, w_q[1], w_kv[1]).chunk(2, dim=-1)  # [B, L, D] each
        q, k, v = (t.view(B, L, H, D // H).transpose(1, 2) for t in (q, k, v))  # [B, H, L, D/H]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class PointWiseFeedForward(nn.Module):
    """Linear -> ReLU -> dropout -> Linear -> dropout (SASRec's position-wise FFN)."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), Dropout(dropout), nn.Linear(hidden, dim), Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def scaled_inputs(
    vectors: torch.Tensor,
    position_embedding: nn.Embedding,
    dropout: nn.Module,
    mask: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """The input of SASRec's and HSTU's blocks: the items' encoder vectors [B, L, D] scaled by sqrt(D)
    (as the authors' SASRec scales its embedding table), plus the learned position embedding, then
    dropout; zero where mask [B, L, 1] (`padding_mask`) is. Returns [B, L, D].

    Packed tokens ([T, D] vectors, see `Packing`) give their `positions` [T] instead, and no mask."""
    if positions is None:
        positions = torch.arange(vectors.shape[1], device=vectors.device)
    x = dropout(vectors * math.sqrt(vectors.shape[-1]) + position_embedding(positions))
    return x if mask is None else x * mask


class _Pad(torch.autograd.Function):
    """packed [T, F] -> [B * L, F] by reading row slots[s] of packed with a zero row appended (T =
    padding). Both directions are one `index_select`: autograd's `index_copy` into zeros is slower on
    a CPU (it was the slowest copy of an HSTU step), and the backward of a gather would be a scatter."""

    @staticmethod
    def forward(ctx, packed: torch.Tensor, slots: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(index)
        with_zero_row = torch.cat([packed, packed.new_zeros(1, packed.shape[1])])  # [T + 1, F]
        return with_zero_row.index_select(0, slots)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


@dataclass(frozen=True)
class Packing:
    """The real positions of a right-padded batch [B, L] as flat indices into its B * L slots.

    Per-token work on `pack`ed [T, F] tensors (T real positions) skips the padding; `pad` gives the
    [B, L, F] layout back with zeros at padding. Both are differentiable: `pack` is an `index_select`
    (its backward scatters into zeros), `pad` an `index_select` each way (`_Pad`)."""

    index: torch.Tensor  # [T] int64, increasing: row-major order of the real positions
    batch: int
    length: int

    @classmethod
    def of(cls, items: torch.Tensor) -> Packing:
        """items: [B, L] int64, 0 = padding."""
        batch, length = items.shape
        return cls((items != 0).reshape(-1).nonzero().squeeze(1), batch, length)

    @property
    def positions(self) -> torch.Tensor:
        """[T] int64: each token's position in its row."""
        return self.index % self.length

    @cached_property
    def slots(self) -> torch.Tensor:
        """[B * L] int64: each slot's row in a packed tensor, T at padding."""
        tokens = self.index.shape[0]
        slots = torch.full((self.batch * self.length,), tokens, dtype=torch.int64, device=self.index.device)
        return slots.index_copy_(0, self.index, torch.arange(tokens, device=self.index.device))

    @cached_property
    def filled_slots(self) -> torch.Tensor:
        """[B * L] int64: `slots` with padding pointing at the last real row instead (for reads
        whose padding rows may hold any finite values)."""
        return self.slots.clamp(max=max(self.index.shape[0] - 1, 0))

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """[B, L, F] -> [T, F], the real positions' rows."""
        return padded.reshape(self.batch * self.length, -1).index_select(0, self.index)

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """[T, F] -> [B, L, F], zeros at padding."""
        return _Pad.apply(packed, self.slots, self.index).view(self.batch, self.length, -1)


def padding_mask(items: torch.Tensor) -> torch.Tensor:
    """[B, L] int64 items -> [B, L, 1] float, 1 at real items, 0 at padding."""
    return (items != 0).unsqueeze(-1).to(torch.get_default_dtype())


class _TableLookup(torch.autograd.Function):
    """weights[index] whose backward is one bincount (a sequential sum per table entry) instead of
    autograd's scatter-add `index_put`; the relative-bias tables are tiny (hundreds of entries) and
    indexed by [B, L, L] tensors, where the bincount is about twice as fast on CPU."""

    @staticmethod
    def forward(ctx, weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(index)
        ctx.num_weights = weights.shape[0]
        return weights[index]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        (index,) = ctx.saved_tensors
        summed = torch.bincount(index.reshape(-1), weights=grad.reshape(-1), minlength=ctx.num_weights)
        return summed.to(grad.dtype), None


def table_lookup(weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """weights: [N] float, index: [...] int64 in [0, N) -> weights[index], shape of index.

    The same values and gradients as `weights[index]` (the reference, tested for parity); only the
    backward differs: a bincount, deterministic on CPU."""
    return _TableLookup.apply(weights, index)
