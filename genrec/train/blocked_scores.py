"""The scores of sampled items: scores[p, k] = users[p] . table[index[p, k]].

A sampled-softmax loss over a small catalogue gets them fastest from the product with every item,
`users @ table.T`, and a gather (gathering the [P, K, D] sampled vectors instead moves more memory
once K x D exceeds the catalogue). Two ways to compute that, with the same values and gradients:

- `reference_sampled_scores`: one [P, N] product, then `gather`. Autograd's backward fills a fresh
  [P, N] zero gradient, scatters into it and multiplies it twice, so on a CPU the step streams a
  block of tens of MB (ML-100K: P ~ 2,500 positions x 1,683 items) through memory five times.
- `blocked_sampled_scores`: the same product and gather a block of rows at a time, sized so that
  a [rows, N] block stays in the CPU cache, with a hand-written backward that does the same per
  block (scatter the block's gradient, then two products). Nothing of size [P, N] is ever stored.
  The parity test compares it with the reference, values and gradients.

The full softmax (cross-entropy over every item) has the same problem at a larger scale (Amazon
Beauty: P ~ 1,100 positions x 12,102 items per batch):

- `reference_softmax_cross_entropy`: the [P, N] logits, then `F.cross_entropy`; its backward
  stores and streams the [P, N] logits and their softmax.
- `blocked_softmax_cross_entropy`: the loss of a block of rows at a time; each block's gradient
  with respect to the users and the table is computed right there, while the block is fresh, and
  kept ([P, D] and [N, D]): the loss is a sum or a mean, so its backward only scales them by the
  upstream scalar. Same products as the reference (one forward, two for the gradient), no [P, N]
  tensor, and only four passes over each [rows, N] block besides the products (see the class).
  This is what fused "linear cross-entropy" kernels do on GPUs (Liger, Cut Cross-Entropy).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# floats in one [rows, N] block of the sampled scores (512 KB): 64-160 rows ran alike on ML-100K, a
# whole [P, N] product 1.8x slower
BLOCK_FLOATS = 1 << 17
SOFTMAX_BLOCK_FLOATS = 1 << 22  # the most floats in one [rows, N] block of the cross-entropy (16 MB)
LN_2 = math.log(2.0)
LOG2_E = 1.0 / LN_2
# |base-2 logit| bound under which the cross-entropy exponentiates without subtracting each row's
# maximum: exp2 of +-64 and sums of up to 2^60 such terms stay far inside float32's normal range
SHIFT_FREE_BITS = 64.0


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """x in float32 when it is in a 16-bit float type (autocast), else unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def common_dtype(users: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """users and table in one float type of at least 32 bits (the hand-written backwards multiply them)."""
    users, table = at_least_fp32(users), at_least_fp32(table)
    dtype = torch.promote_types(users.dtype, table.dtype)
    return users.to(dtype), table.to(dtype)


def reference_sampled_scores(users: torch.Tensor, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """users: [P, D]; table: [N, D]; index: [P, K] int64 in 0..N-1 -> scores [P, K]."""
    return (users @ table.T).gather(1, index)


def block_rows(num_items: int) -> int:
    """Rows per block for a catalogue of `num_items` (at least 16, so that small blocks stay GEMMs)."""
    return max(16, BLOCK_FLOATS // max(num_items, 1))


def softmax_block_rows(num_items: int) -> int:
    """Rows per block of the blocked cross-entropy: 256 (each block also adds a whole [N, D]
    gradient into the table's, so fewer, larger blocks win: 256 rows ran fastest on ML-100K's 1,683
    and Beauty's 12,102 items), fewer where a block would pass 4M floats (16 MB), at least 16."""
    return max(16, min(256, SOFTMAX_BLOCK_FLOATS // max(num_items, 1)))


def logits_are_bounded(base2_users: torch.Tensor, table: torch.Tensor, bits: float = SHIFT_FREE_BITS) -> bool:
    """Whether every logit users[p] . table[j] ([P, D] x [N, D]) lies within +-bits, by Cauchy-Schwarz
    (|u . t| <= |u| |t|): two norms over [P, D] and [N, D] instead of a max over the [P, N] logits."""
    if base2_users.numel() == 0 or table.numel() == 0:
        return True
    bound = base2_users.norm(dim=1).max() * table.norm(dim=1).max()
    return bool(bound <= bits)


class _BlockedSampledScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, users: torch.Tensor, table: torch.Tensor, index: torch.Tensor, rows: int) -> torch.Tensor:  # noqa: ANN001
        scores = users.new_empty(index.shape)
        table_t = table.T
        for start in range(0, users.shape[0], rows):
            stop = start + rows
            torch.gather(users[start:stop] @ table_t, 1, index[start:stop], out=scores[start:stop])
        ctx.save_for_backward(users, table, index)
        ctx.rows = rows
        return scores

    @staticmethod
    def backward(ctx, grad_scores: torch.Tensor):  # noqa: ANN001, ANN205 - autograd's signature
        users, table, index = ctx.saved_tensors
        rows = ctx.rows
        want_users, want_table = ctx.needs_input_grad[:2]
        grad_users = torch.empty_like(users) if want_users else None
        grad_table = torch.zeros_like(table) if want_table else None
        block = users.new_empty(min(rows, users.shape[0]), table.shape[0])  # reused: stays in cache
        grad_scores = grad_scores.contiguous()
        for start in range(0, users.shape[0], rows):
            stop = min(start + rows, users.shape[0])
            # duplicates in a row's index add up, as gather's own backward does
            grad_block = block[: stop - start].zero_().scatter_add_(1, index[start:stop], grad_scores[start:stop])
            if want_users:
                torch.mm(grad_block, table, out=grad_users[start:stop])
            if want_table:
                grad_table.addmm_(grad_block.T, users[start:stop])
        return grad_users, grad_table, None, None


def blocked_sampled_scores(
    users: torch.Tensor, table: torch.Tensor, index: torch.Tensor, rows: int | None = None
) -> torch.Tensor:
    """As `reference_sampled_scores`, a block of `rows` rows at a time (default: `block_rows(N)`)."""
    if users.dim() != 2 or table.dim() != 2 or index.dim() != 2 or users.shape[1] != table.shape[1]:
        raise ValueError(
            f"expected users [P, D], table [N, D], index [P, K]; got {tuple(users.shape)}, "
            f"{tuple(table.shape)}, {tuple(index.shape)}"
        )
    if index.shape[0] != users.shape[0]:
        raise ValueError(f"index has {index.shape[0]} rows for {users.shape[0]} users")
    users, table = common_dtype(users, table)
    return _BlockedSampledScores.apply(users, table, index, rows or block_rows(table.shape[0]))


def sampled_scores(users: torch.Tensor, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The blocked scores on a CPU, where the cache decides the speed; the reference elsewhere
    (a GPU runs the one large product best)."""
    if users.device.type == "cpu":
        return blocked_sampled_scores(users, table, index)
    return reference_sampled_scores(users, table, index)


def reference_softmax_cross_entropy(
    users: torch.Tensor, table: torch.Tensor, positives: torch.Tensor, temperature: float, reduction: str = "mean"
) -> torch.Tensor:
    """users: [P, D]; table: [N, D] (row 0 = padding, never a class); positives: [P] int64 in 1..N-1
    -> the cross-entropy of (users @ table.T) / temperature, summed or averaged over P."""
    logits = users @ table.T / temperature  # [P, N]
    logits[:, 0] = float("-inf")
    return F.cross_entropy(at_least_fp32(logits), positives, reduction=reduction)


class _BlockedSoftmaxCrossEntropy(torch.autograd.Function):
    """Per block of rows, with E = exp(logits - c) for any per-row shift c (softmax = E / s, s = E's
    row sums):

        loss_p        = c_p + log s_p - logit[p, positive_p]
        d / d users   = E @ table / (s T) - table[positives] / T
        d / d table   = E.T @ (users / (s T)) - (users / T) scattered onto the positives' rows

    The 1/T and 1/s scalings are applied to [rows, D] factors, never to the [rows, N] block, and
    the positives' terms once for all rows after the blocks. The logits are computed in base 2
    (log2(e) folded into the users' [P, D] scaling), so E = exp2(logits - c): torch's float32
    `exp2` runs several times faster than its `exp` on a CPU, and the loss is converted back to
    nats once, at the end. The shift c is 0 when every logit is known to lie within
    +-SHIFT_FREE_BITS (`logits_are_bounded`: always so for L2-normalised vectors at the usual
    temperatures), so a block is touched by the product, one exp2 and one sum; otherwise c is the
    row's maximum, as in `F.cross_entropy` (one more max and subtraction per block).
    """

    @staticmethod
    def forward(ctx, users, table, positives, temperature, rows, mean):  # noqa: ANN001, ANN205
        want_users, want_table = ctx.needs_input_grad[:2]
        grad_users = torch.empty_like(users) if want_users else None
        grad_table = torch.zeros_like(table) if want_table else None
        total = users.new_zeros((), dtype=torch.float64)  # in bits until the end
        scaled_users = users / temperature  # [P, D]: logits = scaled_users @ table.T
        base2_users = scaled_users * LOG2_E  # [P, D]: logits / ln 2
        shift_free = logits_are_bounded(base2_users, table)
        table_t = table.T
        block = users.new_empty(min(rows, users.shape[0]), table.shape[0])  # reused by every block
        for start in range(0, users.shape[0], rows):
            stop = min(start + rows, users.shape[0])
            logits = torch.mm(base2_users[start:stop], table_t, out=block[: stop - start])  # [rows, N], base 2
            picked = logits.gather(1, positives[start:stop, None]).squeeze(1)  # [rows]
            if shift_free:
                exps = logits.exp2_()  # E, in place
                exps[:, 0] = 0.0  # the padding item is never a class
            else:
                logits[:, 0] = float("-inf")
                row_max = logits.amax(dim=1, keepdim=True)  # [rows, 1]
                exps = logits.sub_(row_max).exp2_()
                total += row_max.sum(dtype=torch.float64)
            sums = exps.sum(dim=1)  # [rows]
            total += (sums.log2() - picked).sum(dtype=torch.float64)
            if want_users:
                torch.mm(exps, table, out=grad_users[start:stop]).div_(sums[:, None] * temperature)
            if want_table:
                grad_table.addmm_(exps.T, scaled_users[start:stop] / sums[:, None])
        if want_users:
            grad_users.sub_(table.index_select(0, positives), alpha=1.0 / temperature)
        if want_table:
            grad_table.index_add_(0, positives, scaled_users, alpha=-1.0)
        total *= LN_2  # bits -> nats
        scale = 1.0 / max(users.shape[0], 1) if mean else 1.0
        ctx.scale = scale
        ctx.save_for_backward(*(g for g in (grad_users, grad_table) if g is not None))
        ctx.wants = (want_users, want_table)
        return (total * scale).to(users.dtype)

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):  # noqa: ANN205 - autograd's signature
        saved = iter(ctx.saved_tensors)
        factor = grad_loss * ctx.scale
        grads = [next(saved) * factor if want else None for want in ctx.wants]
        return grads[0], grads[1], None, None, None, None


def blocked_softmax_cross_entropy(
    users: torch.Tensor,
    table: torch.Tensor,
    positives: torch.Tensor,
    temperature: float,
    reduction: str = "mean",
    rows: int | None = None,
) -> torch.Tensor:
    """As `reference_softmax_cross_entropy`, a block of `rows` rows at a time (default:
    `softmax_block_rows(N)`). Differentiable once (the gradient is computed in the forward pass)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if users.dim() != 2 or table.dim() != 2 or users.shape[1] != table.shape[1] or positives.shape != users.shape[:1]:
        raise ValueError(
            f"expected users [P, D], table [N, D], positives [P]; got {tuple(users.shape)}, "
            f"{tuple(table.shape)}, {tuple(positives.shape)}"
        )
    users, table = common_dtype(users, table)
    if not torch.is_grad_enabled():  # evaluation: skip the gradient work the forward pass would do
        users, table = users.detach(), table.detach()
    return _BlockedSoftmaxCrossEntropy.apply(
        users, table, positives, temperature, rows or softmax_block_rows(table.shape[0]), reduction == "mean"
    )


def softmax_cross_entropy(
    users: torch.Tensor, table: torch.Tensor, positives: torch.Tensor, temperature: float, reduction: str = "mean"
) -> torch.Tensor:
    """The blocked loss on a CPU, the reference elsewhere (see `sampled_scores`)."""
    if users.device.type == "cpu":
        return blocked_softmax_cross_entropy(users, table, positives, temperature, reduction)
    return reference_softmax_cross_entropy(users, table, positives, temperature, reduction)
