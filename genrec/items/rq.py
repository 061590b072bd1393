"""Residual quantisation of item embeddings into semantic IDs: RQ-KMeans and RQ-VAE.

Both quantise in L levels: level l assigns the residual left by levels < l to the nearest of K
codes, so the first code is a coarse cluster and later codes refine it.
    RQ-KMeans  k-means on the embeddings, then on the residuals, level by level (FAISS when it is
               installed, a plain torch implementation otherwise).
    RQ-VAE     an MLP encoder, L codebooks, an MLP decoder, trained to reconstruct the embedding with
               a commitment loss (TIGER); codebooks start from k-means of the first residuals and
               codes left unused for an epoch are reset to random residuals.
`QuantisationReport` gives the reconstruction error, per-level codebook usage and perplexity.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from genrec.errors import ConfigError

log = logging.getLogger("genrec.items")


def kmeans(x: torch.Tensor, k: int, iters: int = 25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding: x [n, d] -> (centroids [k, d], assignment [n]).

    An empty cluster is re-seeded with the point farthest from its centroid."""
    n = x.shape[0]
    if n < k:
        raise ConfigError(f"cannot make {k} codes from {n} vectors: use fewer codes per level")
    generator = torch.Generator().manual_seed(seed)
    centroids = x[torch.randint(n, (1,), generator=generator)]
    nearest = torch.cdist(x, centroids).squeeze(1) ** 2  # [n] squared distance to the closest centroid
    for _ in range(1, k):  # k-means++: next centroid drawn with probability proportional to distance^2
        pick = torch.multinomial(nearest.clamp(min=0) + 1e-12, 1, generator=generator)
        centroids = torch.cat([centroids, x[pick]])
        nearest = torch.minimum(nearest, (torch.cdist(x, x[pick]).squeeze(1)) ** 2)
    assign = torch.zeros(n, dtype=torch.long)
    for _ in range(iters):
        distances = torch.cdist(x, centroids)  # [n, k]
        assign = distances.argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            far = distances.gather(1, assign[:, None]).squeeze(1).argsort(descending=True)[: int(empty.sum())]
            centroids[empty] = x[far]
    return centroids, torch.cdist(x, centroids).argmin(1)


def _faiss_kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    import faiss

    data = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    km = faiss.Kmeans(data.shape[1], k, niter=iters, seed=seed, verbose=False)
    km.train(data)
    _, assign = km.index.search(data, 1)
    return torch.from_numpy(km.centroids), torch.from_numpy(assign[:, 0]).long()


@dataclass
class QuantisationReport:
    """How well L levels of codes describe the embeddings."""

    reconstruction_mse: float  # mean squared error of the (decoded) quantised embedding
    usage: list[float] = field(default_factory=list)  # per level: fraction of the K codes used
    perplexity: list[float] = field(default_factory=list)  # per level: exp(entropy) of the code distribution
    collisions_before: int = 0  # items sharing a whole SID with another, before resolution
    collisions_after: int = 0

    def summary(self) -> str:
        levels = ", ".join(f"{u:.0%} used / perplexity {p:.0f}" for u, p in zip(self.usage, self.perplexity))
        return (
            f"reconstruction MSE {self.reconstruction_mse:.4f}; levels: {levels}; collisions "
            f"{self.collisions_before} -> {self.collisions_after}"
        )


def code_statistics(codes: np.ndarray, codebook_sizes: list[int]) -> tuple[list[float], list[float]]:
    """Per level: (fraction of codes used, perplexity of the code distribution). codes: [n, L]."""
    usage, perplexity = [], []
    for level, size in enumerate(codebook_sizes):
        counts = np.bincount(codes[:, level], minlength=size)
        p = counts[counts > 0] / counts.sum()
        usage.append(float((counts > 0).sum() / size))
        perplexity.append(float(np.exp(-(p * np.log(p)).sum())))
    return usage, perplexity


def residual_kmeans(
    x: torch.Tensor, codebook_sizes: list[int], iters: int = 25, seed: int = 0, use_faiss: bool | None = None
) -> tuple[np.ndarray, np.ndarray, QuantisationReport]:
    """RQ-KMeans: x [n, d] -> (codes [n, L], last-level distances [n, K_L] for collision handling, report).

    use_faiss: None = FAISS when installed."""
    if use_faiss is None:
        use_faiss = importlib.util.find_spec("faiss") is not None
    fit = _faiss_kmeans if use_faiss else kmeans
    residual = x.float()
    codes, codebooks = [], []
    distances = torch.zeros(0)
    for level, k in enumerate(codebook_sizes):
        centroids, assign = fit(residual, k, iters, seed + level)
        codes.append(assign)
        codebooks.append(centroids)
        distances = torch.cdist(residual, centroids)  # kept for the last level
        residual = residual - centroids[assign]
    codes_np = torch.stack(codes, 1).numpy()
    usage, perplexity = code_statistics(codes_np, codebook_sizes)
    mse = float((residual**2).mean())
    return codes_np, distances.numpy(), QuantisationReport(mse, usage, perplexity)


@dataclass
class RQVAEConfig:
    """RQ-VAE sizes and training (defaults after MiniOneRec's rqvae: 3 x 256 codes of dimension 32)."""

    hidden: list[int] = field(default_factory=lambda: [512, 256, 128])
    code_dim: int = 32
    codebook_sizes: list[int] = field(default_factory=lambda: [256, 256, 256])
    beta: float = 0.25  # commitment weight
    dropout: float = 0.0
    epochs: int = 200
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    kmeans_init: bool = True
    reset_dead_codes: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.codebook_sizes or min(self.codebook_sizes) < 2 or self.code_dim < 1:
            raise ConfigError("rqvae: codebook_sizes must be >= 2 codes per level and code_dim >= 1")


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.SiLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    """x [B, d] -> encoder -> z [B, c] -> L residual codebooks -> z_q -> decoder -> x_hat [B, d]."""

    def __init__(self, input_dim: int, config: RQVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = _mlp([input_dim, *config.hidden, config.code_dim], config.dropout)
        self.decoder = _mlp([config.code_dim, *reversed(config.hidden), input_dim], config.dropout)
        self.codebooks = nn.ParameterList(
            nn.Parameter(torch.randn(k, config.code_dim) * 0.01) for k in config.codebook_sizes
        )
        self.initialised = False

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [B, c] -> (z_q [B, c] with straight-through gradients, codes [B, L], commitment loss,
        last-level residuals [B, c] (for collision handling))."""
        residual, quantised = z, torch.zeros_like(z)
        codes, loss = [], z.new_zeros(())
        for codebook in self.codebooks:
            last_residual = residual
            index = torch.cdist(residual, codebook).argmin(1)  # [B]
            chosen = codebook[index]  # [B, c]
            # codebook moves to the (fixed) residual; the encoder commits to the (fixed) code
            loss = (
                loss + F.mse_loss(chosen, residual.detach()) + self.config.beta * F.mse_loss(residual, chosen.detach())
            )
            quantised = quantised + chosen
            residual = residual - chosen.detach()
            codes.append(index)
        z_q = z + (quantised - z).detach()  # straight-through estimator
        return z_q, torch.stack(codes, 1), loss, last_residual

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, d] -> (reconstruction [B, d], codes [B, L], reconstruction + commitment loss)."""
        z_q, codes, commitment, _ = self.quantise(self.encoder(x))
        reconstruction = self.decoder(z_q)
        return reconstruction, codes, F.mse_loss(reconstruction, x) + commitment

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor) -> None:
        """k-means initialisation, level by level, on the residuals of the encoded `x`."""
        residual = self.encoder(x)
        for level, codebook in enumerate(self.codebooks):
            centroids, assign = kmeans(residual, codebook.shape[0], iters=10, seed=self.config.seed + level)
            codebook.copy_(centroids)
            residual = residual - centroids[assign]
        self.initialised = True

    @torch.no_grad()
    def reset_dead_codes(self, x: torch.Tensor, generator: torch.Generator) -> int:
        """Move every code that no item uses to the residual of a random item; returns how many moved."""
        residual = self.encoder(x)
        moved = 0
        for codebook in self.codebooks:
            index = torch.cdist(residual, codebook).argmin(1)
            dead = torch.bincount(index, minlength=codebook.shape[0]) == 0
            if dead.any():
                picks = torch.randint(len(residual), (int(dead.sum()),), generator=generator)
                codebook[dead] = residual[picks]
                moved += int(dead.sum())
            residual = residual - codebook[torch.cdist(residual, codebook).argmin(1)]
        return moved


def train_rqvae(
    x: torch.Tensor, config: RQVAEConfig, progress: bool = True
) -> tuple[RQVAE, np.ndarray, np.ndarray, QuantisationReport]:
    """Train an RQ-VAE on embeddings x [n, d].

    Returns (model, codes [n, L], last-level distances [n, K_L] for collision handling, report)."""
    torch.manual_seed(config.seed)
    x = x.float()
    model = RQVAE(x.shape[1], config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    if config.kmeans_init:
        model.init_codebooks(x)
    bar = tqdm(range(config.epochs), desc="rq-vae", unit="epoch", disable=not progress, leave=False)
    for _ in bar:
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), config.batch_size):
            batch = x[order[start : start + config.batch_size]]
            _, _, loss = model(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        if config.reset_dead_codes:
            model.reset_dead_codes(x, generator)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    model.eval()
    with torch.no_grad():
        z_q, codes, _, last_residual = model.quantise(model.encoder(x))
        mse = float(F.mse_loss(model.decoder(z_q), x))
        distances = torch.cdist(last_residual, model.codebooks[-1]).numpy()
    codes_np = codes.numpy()
    usage, perplexity = code_statistics(codes_np, config.codebook_sizes)
    if math.isnan(mse):
        raise ConfigError("rq-vae training diverged (NaN reconstruction): try a lower lr")
    return model, codes_np, distances, QuantisationReport(mse, usage, perplexity)
