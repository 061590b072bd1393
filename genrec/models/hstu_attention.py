"""HSTU pointwise attention: a plain reference, and a compiled path with the same signature.

    A = SiLU(Q K^T + rab) / n,  masked causally;  output = A V

n is the model's maximum sequence length (a constant, as in generative-recommenders), so a
row's output does not depend on how much padding its batch has. `hstu_attention` dispatches on
`kernel`; the reference is the default, and the parity test compares every other kernel to it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from genrec.models.dropout import dropout
from genrec.models.hstu_config import HSTUKernel


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


_compiled: Callable | None = None


def _compiled_hstu_attention(q, k, v, bias, n, dropout_p=0.0):  # noqa: ANN001, ANN202 - as the reference
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(reference_hstu_attention, dynamic=True)
    return _compiled(q, k, v, bias, n, dropout_p)


KERNELS: dict[HSTUKernel, Callable[..., torch.Tensor]] = {
    "reference": reference_hstu_attention,
    "compiled": _compiled_hstu_attention,
}


def hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    n: int,
    dropout_p: float = 0.0,
    kernel: HSTUKernel = "reference",
) -> torch.Tensor:
    """Dispatch to `kernel` after checking shapes once (see `reference_hstu_attention`)."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"expected q, k [B, H, L, Dqk] and v [B, H, L, Dv], got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if kernel not in KERNELS:
        raise ValueError(f"unknown HSTU attention kernel {kernel!r}; valid: {', '.join(KERNELS)}")
    return KERNELS[kernel](q, k, v, bias, n, dropout_p)
