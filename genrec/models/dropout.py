"""Dropout with a cheaper mask on a CPU: 16 random bits per element instead of one random draw each.

torch's CPU dropout draws one random number per element; on HSTU's [B, H, L, L] attention weights
that costs more than the attention product itself (a [16, 2, 200, 200] tensor: 12 ms at one thread,
against 3 ms here). `bit_dropout` draws 64-bit random words and compares each 16-bit quarter with a
threshold: p is rounded to a multiple of 1/65536 (off by at most 7.7e-6) and the kept values are
scaled by the exact inverse of the keep probability, so the output's expectation is the input, as
with `F.dropout`. `dropout` (and the `Dropout` module) use it on a CPU and `F.dropout` elsewhere;
the tests check its keep rate, its scaling and its gradient against that definition.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 1 << 16  # 16-bit slices of the random words


def dropped_levels(p: float) -> int:
    """How many of the 65,536 levels of a 16-bit slice drop an element: round(p * 65536)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    return round(p * LEVELS)


def bit_dropout_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool mask of `shape`, True (kept) with probability 1 - dropped_levels(p) / 65536."""
    numel = math.prod(shape)
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((numel + 3) // 4,), dtype=torch.int64, device=device)
    slices = words.view(torch.int16)[:numel].view(shape)  # uniform in -32768..32767
    return slices >= dropped_levels(p) - (LEVELS >> 1)


def bit_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """x with each element zeroed with probability ~p (see the module docstring), the rest scaled."""
    dropped = dropped_levels(p)
    if dropped == 0:
        return x
    if dropped == LEVELS:
        return x * 0
    keep = bit_dropout_mask(x.shape, p, x.device).to(x.dtype).mul_(LEVELS / (LEVELS - dropped))
    return x * keep


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout`, with the bit mask on a CPU."""
    if not training or p == 0:
        return x
    if x.device.type == "cpu":
        return bit_dropout(x, p)
    return F.dropout(x, p, training=True)


class Dropout(nn.Module):
    """`nn.Dropout` through `dropout` (the bit mask on a CPU)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        dropped_levels(p)  # validates p
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
