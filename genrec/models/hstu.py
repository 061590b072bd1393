"""HSTU (Zhai et al., "Actions Speak Louder than Words", ICML 2024), the sequential model of
generative-recommenders, written to be read top to bottom.

One block, for input X [B, L, D]:
    U, V, Q, K = split(SiLU(f1(LayerNorm(X))))                  pointwise projections
    A = SiLU(Q K^T + rab(positions, time gaps)) / n, causal      pointwise attention (no softmax)
    Y = X + f2(dropout(LayerNorm(A V) * U))                      gated output, residual
The relative attention bias rab adds a learned weight per relative position and per bucket of
log time gap (bucket = floor(ln(max(|dt|, 1)) / 0.301)); the time gap of query position i is
measured from the time of the event it predicts (the request time), as in the reference. Input
embeddings (the item encoder's vectors: an ID table unless another encoder is given) are scaled by
sqrt(D) plus a learned position embedding; outputs and item vectors are L2-normalised, so scores
are cosine similarities (divided by a temperature in the loss).
The attention normaliser n is `max_len` (the reference uses its padded length, max_len + 11).
With the chunked attention kernel (the default on CPU) the bias is never built as [B, L, L]: the
kernel asks `RelativeBias.chunked` for the cells of each chunk of query positions it computes, and
the blocks' per-token work runs on the T real positions of the batch only (`token_layout`, packed
tokens [T, D] as generative-recommenders' jagged tensors); q, k and v alone are copied into the
padded [B, L] layout the kernel reads.

User features (`model.user_features`) come as P contextual tokens before the history, as GR's
contextual features do: every history position attends to them under the causal mask, the
history's relative bias is unchanged (positions and time gaps among history events only), and a
history position's attention to prefix token p gets a learned bias of its own (the tokens have no
position or time); their outputs are dropped, never scored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genrec.errors import ConfigError
from genrec.models.base import SequentialRecommender
from genrec.models.dropout import Dropout
from genrec.models.hstu_attention import (
    CHUNK,
    ChunkedBias,
    chunk_row_counts,
    hstu_attention,
    packed_hstu_attention,
    resolve_kernel,
)
from genrec.models.hstu_config import HSTUConfig
from genrec.models.item_encoder import IDEmbedding, ItemEncoder
from genrec.models.layers import Packing, padding_mask, scaled_inputs, table_lookup
from genrec.models.user_features import UserFeaturePrefix, prepend, user_tokens


class RelativeBias(nn.Module):
    """rab[b, i, j] = w_pos[j - i] + w_time[bucket(t_query[b, i] - t[b, j])], shared by all heads."""

    def __init__(self, max_len: int, time_buckets: int, position_bias: bool) -> None:
        super().__init__()
        self.max_len = max_len
        self.time_buckets = time_buckets
        self.position_weights = nn.Parameter(torch.empty(2 * max_len - 1).normal_(0, 0.02)) if position_bias else None
        self.time_weights = nn.Parameter(torch.empty(time_buckets + 1).normal_(0, 0.02)) if time_buckets else None

    def forward(self, timestamps: torch.Tensor, query_timestamps: torch.Tensor) -> torch.Tensor:
        """timestamps, query_timestamps: [B, L] int64 -> bias [B, 1, L, L] (broadcast over heads)."""
        B, L = timestamps.shape
        bias = torch.zeros(1, 1, L, L, device=timestamps.device)
        if self.position_weights is not None:
            bias = bias + table_lookup(self.position_weights, self.relative_positions(L, timestamps.device))
        if self.time_weights is not None:
            bias = bias + table_lookup(self.time_weights, self.buckets(query_timestamps, timestamps)).unsqueeze(1)
        return bias

    def relative_positions(self, length: int, device: torch.device) -> torch.Tensor:
        """[L, L] int64: j - i shifted to index position_weights."""
        positions = torch.arange(length, device=device)
        return positions[None, :] - positions[:, None] + self.max_len - 1

    def buckets(self, query_timestamps: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        """query_timestamps: [R, C], timestamps: [R, S] int64 -> [R, C, S] int32 log-gap buckets
        (int32: half the memory traffic of int64 in the lookups and bincounts that read them)."""
        # in place: [B, L, L] int64 temporaries are the largest tensors of an evaluation batch
        gaps = (query_timestamps[:, :, None] - timestamps[:, None, :]).abs_().clamp_(min=1)
        return gaps.float().log_().div_(0.301).to(torch.int32).clamp_(max=self.time_buckets)

    def chunked(
        self, timestamps: torch.Tensor, query_timestamps: torch.Tensor, lengths: torch.Tensor, chunk: int = CHUNK
    ) -> ChunkedBias:
        """The same bias for the chunked kernel, built per chunk of `chunk` query positions on the
        cells it reads (causal, and only the rows that reach the chunk when `lengths` [B] is sorted
        longest first)."""
        B, L = timestamps.shape
        row_counts = chunk_row_counts(lengths, B, L, chunk)
        buckets = None
        if self.time_weights is not None:
            buckets = []
            for start, rows in zip(range(0, L, chunk), row_counts):
                stop = min(start + chunk, L)
                buckets.append(self.buckets(query_timestamps[:rows, start:stop], timestamps[:rows, :stop]))
        relative = self.relative_positions(L, timestamps.device) if self.position_weights is not None else None
        return ChunkedBias(self.position_weights, relative, self.time_weights, buckets, row_counts, chunk)


def prefixed_bias(bias: torch.Tensor, prefix_weights: torch.Tensor) -> torch.Tensor:
    """The [B, 1, L, L] history bias grown to [B, 1, P+L, P+L] for P prefix tokens first: history
    rows get prefix_weights [P] towards the prefix columns; prefix rows get none (they attend only to
    earlier prefix tokens under the causal mask)."""
    B, _, L, _ = bias.shape
    P = prefix_weights.shape[0]
    full = bias.new_zeros(B, 1, P + L, P + L)
    full[:, :, P:, P:] = bias
    full[:, :, P:, :P] = prefix_weights.to(bias.dtype)
    return full


class HSTUBlock(nn.Module):
    """One HSTU layer; layer norms have no affine parameters, f1 has no bias (as in the reference)."""

    def __init__(self, config: HSTUConfig) -> None:
        super().__init__()
        self.config = config
        H, dqk, dv = config.num_heads, config.attention_dim, config.value_dim
        self.uvqk = nn.Parameter(torch.empty(config.dim, H * (2 * dv + 2 * dqk)).normal_(0, 0.02))  # f1
        self.out = nn.Linear(H * dv, config.dim)  # f2
        nn.init.xavier_uniform_(self.out.weight)
        self.dropout = Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor | ChunkedBias,
        lengths: torch.Tensor | None = None,
        packing: Packing | None = None,
    ) -> torch.Tensor:
        """x: [B, L, D], or [T, D] real positions only with their `packing`; bias: [B, 1, L, L] (or a
        ChunkedBias); lengths: [B] real positions (right padding) -> the shape of x.

        Packed, every per-token operation runs on the T real positions; only q, k and v are copied
        into the padded [B, L] layout the attention kernel reads, and its output back (inside the
        chunked kernel, `packed_hstu_attention`, when the bias is a ChunkedBias)."""
        c = self.config
        H, dqk, dv = c.num_heads, c.attention_dim, c.value_dim
        normed = F.layer_norm(x, (x.shape[-1],), eps=1e-6)
        dropout_p = c.attention_dropout if self.training else 0.0
        if packing is not None and isinstance(bias, ChunkedBias):
            u, v, q, k = F.silu(normed @ self.uvqk).split([H * dv, H * dv, H * dqk, H * dqk], dim=-1)  # [T, .]
            attended = packed_hstu_attention(q, k, v, bias, c.max_len, packing, H, dropout_p)  # [T, H * dv]
        else:
            u, vqk = F.silu(normed @ self.uvqk).split([H * dv, H * (dv + 2 * dqk)], dim=-1)
            if packing is not None:
                vqk = packing.pad(vqk)  # [B, L, H * (dv + 2 dqk)]
            B, L, _ = vqk.shape
            v, q, k = vqk.split([H * dv, H * dqk, H * dqk], dim=-1)
            q, k = (t.view(B, L, H, dqk).transpose(1, 2) for t in (q, k))  # [B, H, L, dqk]
            v = v.view(B, L, H, dv).transpose(1, 2)  # [B, H, L, dv]
            attended = hstu_attention(q, k, v, bias, c.max_len, dropout_p, c.kernel, lengths)  # [B, H, L, dv]
            attended = attended.transpose(1, 2).reshape(B, L, H * dv)
            if packing is not None:
                attended = packing.pack(attended)  # [T, H * dv]
        gated = F.layer_norm(attended, (H * dv,), eps=1e-6) * u  # Norm(A V) * U
        return x + self.out(self.dropout(gated))


class HSTU(SequentialRecommender):
    normalised = True

    def __init__(
        self,
        num_items: int,
        config: HSTUConfig,
        item_encoder: ItemEncoder | None = None,
        user_prefix: UserFeaturePrefix | None = None,
    ) -> None:
        """item_encoder: ids [...] -> [..., config.dim], initialised (default: an ID table);
        user_prefix: users [B] -> [B, P, config.dim] tokens put before the history (default: none)."""
        super().__init__()
        self.num_items = num_items
        self.max_len = config.max_len
        self.config = config
        table = IDEmbedding(num_items, config.dim) if item_encoder is None else None
        self.item_encoder = item_encoder if table is None else table
        self.position_embedding = nn.Embedding(config.max_len, config.dim)
        self.dropout = Dropout(config.dropout)
        self.bias = RelativeBias(config.max_len, config.time_buckets, config.position_bias)
        self.blocks = nn.ModuleList(HSTUBlock(config) for _ in range(config.num_blocks))
        if table is not None:  # a given encoder keeps its weights
            nn.init.trunc_normal_(table.weight, std=0.02, a=-0.04, b=0.04)
            with torch.no_grad():
                table.weight[0].zero_()
        nn.init.xavier_normal_(self.position_embedding.weight)
        if user_prefix is not None and config.token_layout == "packed":
            raise ConfigError("model.token_layout: packed tokens do not take user features yet; use auto or padded")
        self.user_prefix = user_prefix
        self.prefix_bias = None if user_prefix is None else nn.Parameter(torch.zeros(user_prefix.num_tokens))

    def encode(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        query_timestamps: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """items, timestamps: [B, L] right-padded -> [B, L, D] L2-normalised user vectors.

        query_timestamps: [B, L] the time at which position i predicts (the next event's time);
        default: the position's own time. users: [B] user indices, read when the model has user
        features (their prefix tokens; see the module docstring).
        """
        B, L = items.shape
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds max_len {self.max_len}")
        query_timestamps = timestamps if query_timestamps is None else query_timestamps
        if self.prefix_bias is None and resolve_kernel(self.config.kernel, items.device) == "chunked":
            bias = self.bias.chunked(timestamps, query_timestamps, lengths)  # only the cells it reads
        else:
            bias = self.bias(timestamps, query_timestamps)
        if self.packs_tokens(items.device):
            packing = Packing.of(items)
            vectors = self.item_encoder(items.reshape(-1)[packing.index])  # [T, D]
            x = scaled_inputs(vectors, self.position_embedding, self.dropout, positions=packing.positions)
            for block in self.blocks:
                x = block(x, bias, lengths, packing)
            return packing.pad(F.normalize(x, dim=-1, eps=1e-6))
        mask = padding_mask(items)  # [B, L, 1]
        x = scaled_inputs(self.item_encoder(items), self.position_embedding, self.dropout, mask)
        if self.prefix_bias is not None:
            x, mask = prepend(user_tokens(self.user_prefix, users, items, self.dropout), x, mask)  # [B, P+L, ...]
            bias = prefixed_bias(bias, self.prefix_bias)
            lengths = lengths + self.user_prefix.num_tokens
        for block in self.blocks:
            x = block(x, bias, lengths) * mask
        return F.normalize(x[:, x.shape[1] - L :], dim=-1, eps=1e-6)

    def skips_padding(self, device: torch.device) -> bool:
        return self.packs_tokens(device)

    def packs_tokens(self, device: torch.device) -> bool:
        """Whether `encode` runs the blocks' per-token work on real positions only (`token_layout`):
        "auto" packs with the chunked kernel; user-feature prefixes keep the padded layout."""
        if self.prefix_bias is not None:
            return False
        if self.config.token_layout == "auto":
            return resolve_kernel(self.config.kernel, device) == "chunked"
        return self.config.token_layout == "packed"

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.item_encoder(ids), dim=-1, eps=1e-6)
