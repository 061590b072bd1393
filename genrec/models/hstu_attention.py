"""HSTU pointwise attention: a plain reference, and faster paths with the same values.

    A = SiLU(Q K^T + rab) / n,  masked causally;  output = A V

n is the model's maximum sequence length (a constant, as in generative-recommenders), so a
row's output does not depend on how much padding its batch has. `hstu_attention` dispatches on
`kernel`: "reference" (one [B, H, L, L] product, masked), "chunked" (the same values a chunk of
query positions at a time, skipping the masked and padded cells; the default on a CPU, where the
work saved is time saved), "compiled" (the reference through torch.compile). "auto" is chunked on a
CPU and the reference elsewhere (a GPU runs the one large product best). The parity tests compare
every kernel to the reference, values and gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from genrec.models.dropout import dropout
from genrec.models.hstu_config import HSTUKernel
from genrec.models.layers import Packing


def reference_hstu_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, n: int, dropout_p: float = 0.0
) -> torch.Tensor:
    """q, k: [B, H, L, Dqk]; v: [B, H, L, Dv]; bias: [B, H, L, L] (or broadcastable); n: normaliser;
    dropout_p: dropout on the attention weights (pass 0 outside training).

    Returns [B, H, L, Dv]. Position i attends to j <= i only.
    """
    L = q.shape[2]
    scores = torch.einsum("bhid,bhjd->bhij", q, k) + bias  # [B, H, L, L]
    causal_over_n = torch.ones(L, L, dtype=scores.dtype, device=q.device).tril_() / n  # mask and scale in one product
    weights = F.silu(scores) * causal_over_n
    if dropout_p > 0:
        weights = dropout(weights, dropout_p)
    return torch.einsum("bhij,bhjd->bhid", weights, v)


CHUNK = 48  # query positions per chunk of the chunked kernel


def chunk_row_counts(lengths: torch.Tensor | None, batch: int, length: int, chunk: int) -> list[int]:
    """For each chunk of `chunk` query positions, how many rows it computes: the rows whose length
    reaches into it when `lengths` ([B], right padding) is sorted longest first, else all of them."""
    starts = range(0, length, chunk)
    if lengths is not None and batch > 1 and bool((lengths[:-1] >= lengths[1:]).all()):
        reach = lengths[None, :] > torch.tensor(list(starts), device=lengths.device)[:, None]  # [chunks, B]
        return [int(c) for c in reach.sum(1)]
    return [batch] * len(starts)


@dataclass
class ChunkedBias:
    """HSTU's relative attention bias, never built as a [B, 1, L, L] tensor: the chunked kernel asks
    for the cells of one chunk (queries [start, stop), keys [0, stop), its `row_counts[c]` rows)

        bias[b, i, j] = position_weights[relative[i, j]] + time_weights[buckets[c][b, i - start, j]]

    and adds the chunk's gradient back into the two tables with bincounts. relative: [L, L] int64
    (j - i shifted to >= 0); buckets: per chunk, [rows_c, C, stop] int32 (computed once per batch
    by the model and shared by its blocks). A table that is None leaves its term out.

    The tables are shared by every block of the model, so a chunk's cells (and its flattened
    position index) are built once per batch, by the first block that asks, and reused by the
    others: the kernel reads them without autograd (it adds the tables' gradients itself)."""

    position_weights: torch.Tensor | None  # [2 * max_len - 1]
    relative: torch.Tensor | None  # [L, L]
    time_weights: torch.Tensor | None  # [time_buckets + 1]
    buckets: list[torch.Tensor] | None  # per chunk [rows_c, C, stop] int32
    row_counts: list[int]
    chunk: int
    built: dict[tuple, torch.Tensor | None] = field(default_factory=dict, repr=False)

    def cells(self, index: int, start: int, stop: int, rows: int) -> torch.Tensor | None:
        """The bias of chunk `index`: [rows or 1, 1, stop - start, stop], or None without terms."""
        key = ("cells", index, start, stop, rows)
        if key not in self.built:
            self.built[key] = self._cells(index, start, stop, rows)
        return self.built[key]

    def _cells(self, index: int, start: int, stop: int, rows: int) -> torch.Tensor | None:
        bias = None
        if self.position_weights is not None:
            bias = self.position_weights[self.relative[start:stop, :stop]][None]  # [1, C, stop]
        if self.time_weights is not None:
            buckets = self.buckets[index][:rows]  # [rows, C, stop] int32, contiguous
            time = self.time_weights.index_select(0, buckets.view(-1)).view(buckets.shape)
            bias = time if bias is None else bias + time
        return None if bias is None else bias[:, None]

    def relative_index(self, start: int, stop: int) -> torch.Tensor:
        """[(stop - start) * stop] int64: the chunk's position-table index, flattened."""
        key = ("relative", start, stop)
        if key not in self.built:
            self.built[key] = self.relative[start:stop, :stop].reshape(-1)
        return self.built[key]

    def add_gradients(
        self, grads: list[torch.Tensor | None], index: int, start: int, stop: int, grad_cells: torch.Tensor
    ) -> None:
        """grads: [position, time] accumulators; grad_cells: [rows, C, stop] (summed over heads)."""
        if self.position_weights is not None:
            positions = self.relative_index(start, stop)
            grads[0] += torch.bincount(positions, grad_cells.sum(0).reshape(-1), self.position_weights.shape[0])
        if self.time_weights is not None:
            index_ = self.buckets[index][: grad_cells.shape[0]].reshape(-1)
            grads[1] += torch.bincount(index_, grad_cells.reshape(-1), self.time_weights.shape[0])


def heads_first(rows: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    """Rows of the padded layout [B * L, H * d] (heads side by side) -> the kernel's [B * H, L, d]."""
    length, d = rows.shape[0] // batch, rows.shape[-1] // heads
    if heads == 1:
        return rows.view(batch, length, d)
    return rows.view(batch, length, heads, d).transpose(1, 2).reshape(batch * heads, length, d)


def tokens_first(padded: torch.Tensor, packing: Packing, heads: int) -> torch.Tensor:
    """The kernel's [B * H, L, d] -> packed tokens [T, H * d] (the real positions' rows)."""
    B, L, d = packing.batch, packing.length, padded.shape[-1]
    if heads > 1:
        padded = padded.view(B, heads, L, d).transpose(1, 2)  # [B, L, H, d]
    return padded.reshape(B * L, heads * d).index_select(0, packing.index)


class _ChunkedHSTUAttention(torch.autograd.Function):
    """The forward and backward of `chunked_hstu_attention`, one chunk of query positions at a time,
    on q, k [B*H, L, Dqk] and v [B*H, L, Dv] (row b's heads at b*H .. b*H+H-1, so a chunk's first
    `rows` rows are its first rows*H entries). With a `packing` (`packed_hstu_attention`), q, k and
    v come as packed tokens [T, H*d] and the output and gradients go back packed: the copies between
    the two layouts happen here, one `index_select` per tensor and direction.

    Every product is one `bmm` on strided views (no per-chunk copies of the inputs; an in-place
    `baddbmm_` into a strided slice would be a loop of per-matrix `addmm_` calls on a CPU). Autograd through sliced
    inputs would give every chunk's backward a zero-filled gradient of the whole input (q, k, v and
    the [B, 1, L, L] bias) to copy into; here each chunk adds its gradient to the slice it read.
    Saved per chunk: the scores (pre-SiLU) and the dropout keep-mask.
    """

    @staticmethod
    def forward(
        ctx, q, k, v, bias, position_weights, time_weights, lazy_bias, n, dropout_p, row_counts, chunk, heads, packing
    ):  # noqa: ANN001, ANN205, PLR0913 - autograd's signature
        if packing is not None:  # packed [T, H * d] in and out; the chunks read the padded [B*H, L, d]
            # padding rows copy a real row (`filled_slots`): finite values that only padding queries read
            q, k, v = (heads_first(t.index_select(0, packing.filled_slots), packing.batch, heads) for t in (q, k, v))
        L = q.shape[1]
        causal_over_n = torch.ones(L, L, dtype=q.dtype, device=q.device).tril_() / n
        # rows a chunk skips are padding there: 0 in the padded layout, never read back in the packed one
        out = q.new_zeros(q.shape[0], L, v.shape[-1]) if packing is None else q.new_empty(q.shape[0], L, v.shape[-1])
        saved, keep_saved = [], any(ctx.needs_input_grad[:6])  # nothing to keep for evaluation
        for index, (start, rows) in enumerate(zip(range(0, L, chunk), row_counts)):
            stop, r = min(start + chunk, L), rows * heads
            if rows == 0:
                saved.append(None)
                continue
            scores = torch.bmm(q[:r, start:stop], k[:r, :stop].transpose(1, 2))  # [r, C, stop]
            grid = scores.view(rows, heads, stop - start, stop)
            if lazy_bias is not None:
                cells = lazy_bias.cells(index, start, stop, rows)
                if cells is not None:
                    grid += cells
            else:
                grid += bias[: min(rows, bias.shape[0]), :, start:stop, :stop]
            weights = F.silu(scores).mul_(causal_over_n[start:stop, :stop])
            keep = dropout(torch.ones_like(weights), dropout_p) if dropout_p > 0 else None  # scaled keep-mask
            if keep is not None:
                weights.mul_(keep)
            out[:r, start:stop] = torch.bmm(weights, v[:r, :stop])
            saved.append((scores, keep) if keep_saved else None)
        ctx.save_for_backward(q, k, v, bias)
        ctx.chunks, ctx.chunk, ctx.heads, ctx.causal_over_n, ctx.lazy_bias, ctx.packing = (
            saved,
            chunk,
            heads,
            causal_over_n,
            lazy_bias,
            packing,
        )
        return out if packing is None else tokens_first(out, packing, heads)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205 - autograd's signature
        q, k, v, bias = ctx.saved_tensors
        want_q, want_k, want_v, want_bias, want_position, want_time = ctx.needs_input_grad[:6]
        packing, heads = ctx.packing, ctx.heads
        if packing is not None:  # zeros at padding: padding queries then add nothing to grad_k and grad_v
            grad_out = heads_first(packing.pad(grad_out).view(-1, grad_out.shape[-1]), packing.batch, heads)
        grad_q, grad_k, grad_v = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        grad_bias = torch.zeros_like(bias) if want_bias else None
        lazy = ctx.lazy_bias
        table_grads = [  # the lazy bias's [position, time] tables, in float64 as bincount sums
            torch.zeros(t.shape, dtype=torch.float64, device=q.device) if t is not None else None
            for t in ((lazy.position_weights, lazy.time_weights) if lazy is not None else (None, None))
        ]
        L = q.shape[1]
        for index, (start, saved) in enumerate(zip(range(0, L, ctx.chunk), ctx.chunks)):
            if saved is None:
                continue
            scores, keep = saved
            r, stop = scores.shape[0], min(start + ctx.chunk, L)
            mask = ctx.causal_over_n[start:stop, :stop]
            grad_chunk = grad_out[:r, start:stop]  # [r, C, Dv]
            if want_v:
                weights = F.silu(scores).mul_(mask)
                if keep is not None:
                    weights.mul_(keep)
                grad_v[:r, :stop].add_(torch.bmm(weights.transpose(1, 2), grad_chunk))  # not +=: no copy back
            grad_weights = torch.bmm(grad_chunk, v[:r, :stop].transpose(1, 2))  # [r, C, stop]
            if keep is not None:
                grad_weights.mul_(keep)
            grad_scores = torch.ops.aten.silu_backward(grad_weights.mul_(mask), scores)
            grad_q[:r, start:stop] = torch.bmm(grad_scores, k[:r, :stop])
            grad_k[:r, :stop].add_(torch.bmm(grad_scores.transpose(1, 2), q[:r, start:stop]))
            grid = grad_scores.view(r // heads, heads, stop - start, stop)
            if want_bias:  # summed over what the bias broadcasts over (heads; rows when it is shared)
                if grad_bias.shape[1] == 1:
                    grid = grid.sum(1, keepdim=True)
                if grad_bias.shape[0] == 1:
                    grid = grid.sum(0, keepdim=True)
                grad_bias[: grid.shape[0], :, start:stop, :stop] += grid
            elif lazy is not None and (want_position or want_time):
                lazy.add_gradients(table_grads, index, start, stop, grid.sum(1))
        position_grad, time_grad = (
            g.to(q.dtype) if g is not None and want else None
            for g, want in zip(table_grads, (want_position, want_time))
        )
        if packing is not None:
            grad_q, grad_k, grad_v = (tokens_first(g, packing, heads) for g in (grad_q, grad_k, grad_v))
        return (
            grad_q if want_q else None,
            grad_k if want_k else None,
            grad_v if want_v else None,
            grad_bias,
            position_grad,
            time_grad,
            *(None,) * 7,
        )


def chunked_hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    n: int,
    dropout_p: float = 0.0,
    lengths: torch.Tensor | None = None,
    chunk: int = CHUNK,
) -> torch.Tensor:
    """The reference's values, computed `chunk` query positions at a time, so that the work the
    causal mask and the padding would throw away is never done:

    - queries s..e-1 attend to keys 0..e-1 only (the reference computes all L keys and masks the
      rest: with 4 chunks this does 5/8 of its [L, L] cells);
    - with `lengths` ([B] real positions per row, right padding) sorted longest first, as a
      training batch is (`SequenceBatch.longest_first`), a chunk takes only the rows that
      have a position in it. Other rows' outputs there are padding positions: they are set to 0.

    Outputs at padding positions differ from the reference's (which are never used: the model
    masks them); outputs at real positions, and every gradient reaching real inputs, are the
    same. bias: [B or 1, H or 1, L, L], or a `ChunkedBias` (its own chunks and row counts; `lengths`
    and `chunk` are then unused). Other shapes as `reference_hstu_attention`.
    """
    B, H, L, _ = q.shape
    # contiguous copies (one pass each): bmm on views into a wider tensor (HSTU's q, k, v are columns of
    # one projection) gives results that depend on where the allocator put it (MKL's kernels differ by
    # alignment), and a resumed run would no longer repeat an uninterrupted one bit for bit
    q3, k3, v3 = (t.reshape(B * H, L, t.shape[-1]).contiguous() for t in (q, k, v))
    if isinstance(bias, ChunkedBias):  # the model built it for these rows and chunks
        out = with_chunked_bias(q3, k3, v3, bias, n, dropout_p, H, L)
    else:
        if bias.dim() != 4 or bias.shape[0] not in (1, B) or bias.shape[1] not in (1, H) or bias.shape[2:] != (L, L):
            raise ValueError(f"expected bias [B or 1, H or 1, {L}, {L}], got {tuple(bias.shape)}")
        row_counts = chunk_row_counts(lengths, B, L, chunk)
        out = _ChunkedHSTUAttention.apply(q3, k3, v3, bias, None, None, None, n, dropout_p, row_counts, chunk, H, None)
    return out.view(B, H, L, v.shape[-1])


def packed_hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: ChunkedBias,
    n: int,
    packing: Packing,
    heads: int,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """`chunked_hstu_attention` on packed tokens: q, k [T, H * Dqk] and v [T, H * Dv] (the real
    positions of `packing`'s batch, heads side by side, as HSTU's projection gives them; column
    slices of one tensor are fine) -> [T, H * Dv].

    The copy into the kernel's padded layout and back happens inside the kernel, once per tensor in
    each direction: no padded q, k, v or output exists outside it, and the gradients come back
    packed (no [B, L, 3 D] concatenation in the backward). `bias` must have been built for
    `packing`'s batch (rows sorted longest first)."""
    if q.dim() != 2 or k.shape != q.shape or v.shape[0] != q.shape[0] or q.shape[1] % heads or v.shape[1] % heads:
        raise ValueError(
            f"expected q, k [T, H * Dqk] and v [T, H * Dv] for {heads} heads, got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[0] != packing.index.shape[0]:
        raise ValueError(f"{q.shape[0]} tokens for a packing of {packing.index.shape[0]}")
    return with_chunked_bias(q, k, v, bias, n, dropout_p, heads, packing.length, packing)


def with_chunked_bias(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: ChunkedBias,
    n: int,
    dropout_p: float,
    heads: int,
    length: int,
    packing: Packing | None = None,
) -> torch.Tensor:
    """The kernel with a `ChunkedBias` built for a batch of padded length `length` (checked here)."""
    if len(bias.row_counts) != len(range(0, length, bias.chunk)):
        raise ValueError(f"a ChunkedBias of {len(bias.row_counts)} chunks for length {length}")
    tables = (bias.position_weights, bias.time_weights)
    return _ChunkedHSTUAttention.apply(
        q, k, v, None, *tables, bias, n, dropout_p, bias.row_counts, bias.chunk, heads, packing
    )


_compiled: Callable | None = None


def _compiled_hstu_attention(q, k, v, bias, n, dropout_p=0.0):  # noqa: ANN001, ANN202 - as the reference
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(reference_hstu_attention, dynamic=True)
    return _compiled(q, k, v, bias, n, dropout_p)


KERNELS: dict[str, Callable[..., torch.Tensor]] = {
    "reference": reference_hstu_attention,
    "chunked": chunked_hstu_attention,
    "compiled": _compiled_hstu_attention,
}


def hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | ChunkedBias,
    n: int,
    dropout_p: float = 0.0,
    kernel: HSTUKernel = "reference",
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dispatch to `kernel` after checking shapes once (see `reference_hstu_attention`).

    lengths: [B] real (right-padded) positions per row; the chunked kernel skips padding with it.
    bias: a tensor, or (chunked kernel only) a `ChunkedBias`.
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"expected q, k [B, H, L, Dqk] and v [B, H, L, Dv], got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if lengths is not None and lengths.shape != q.shape[:1]:
        raise ValueError(f"expected lengths [B] = [{q.shape[0]}], got {tuple(lengths.shape)}")
    kernel = resolve_kernel(kernel, q.device)
    if kernel == "chunked":
        return chunked_hstu_attention(q, k, v, bias, n, dropout_p, lengths)
    if isinstance(bias, ChunkedBias):
        raise ValueError(f"a ChunkedBias needs the chunked kernel, not {kernel!r}")
    return KERNELS[kernel](q, k, v, bias, n, dropout_p)


def resolve_kernel(kernel: HSTUKernel, device: torch.device) -> str:
    """The kernel `kernel` names on `device`: "auto" is chunked on a CPU, the reference elsewhere."""
    if kernel == "auto":
        kernel = "chunked" if device.type == "cpu" else "reference"
    if kernel not in KERNELS:
        raise ValueError(f"unknown HSTU attention kernel {kernel!r}; valid: auto, {', '.join(KERNELS)}")
    return kernel
