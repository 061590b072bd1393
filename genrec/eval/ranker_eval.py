"""A ranker's per-task metrics on the evaluation cases of a split.

Each case is impressions of its user: the target event with its labels, plus `negatives` items drawn
uniformly (fixed seed) that are labelled 0 for the binary heads (the regression heads are judged on
the targets alone). Binary heads: AUC, GAUC, log loss; regression heads: RMSE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from genrec.data.dataset import Sequences
from genrec.data.splits import EvalCases
from genrec.eval.evaluator import EvalBatch, case_batches
from genrec.eval.ranking_metrics import auc, gauc, log_loss, rmse

# (users [E], items [E]) -> [E, T] the labels of those events
LabelLookup = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (cases, candidates [B, C]) -> [B, C, T] a ranker's logits per task (a regression head: its value)
TaskScorer = Callable[[EvalBatch, torch.Tensor], torch.Tensor]


@torch.no_grad()
def evaluate_ranker(
    ranker: TaskScorer,
    tasks: Sequence[tuple[str, str]],
    labels: LabelLookup,
    sequences: Sequences,
    cases: EvalCases,
    num_items: int,
    max_history: int | None = None,
    negatives: int = 4,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """The metrics of each task (`tasks`: (name, "binary" | "regression") in the ranker's head order):
    {"like/auc": ..., "like/gauc": ..., "like/gauc_users": ..., "like/log_loss": ..., "rating/rmse": ...}."""
    gen = torch.Generator().manual_seed(seed)
    users, logits, truth = [], [], []
    for part in case_batches(sequences, cases, num_items, 256, max_history, False, "cpu", progress, "eval ranker"):
        B = len(part.targets)
        sampled = torch.randint(1, num_items + 1, (B, negatives), generator=gen)
        candidates = torch.cat([part.targets[:, None], sampled], dim=1)  # [B, 1 + K]
        logits.append(ranker(part.batch, candidates).cpu())
        truth.append(labels(part.batch.users, part.targets).cpu())  # [B, T]
        users.append(part.batch.users.cpu())
    out = torch.cat(logits).float().numpy()  # [C, 1 + K, T]
    target_labels = torch.cat(truth).numpy()  # [C, T]
    case_users = torch.cat(users).numpy()
    metrics: dict[str, float] = {}
    for t, (name, kind) in enumerate(tasks):
        if kind == "regression":
            metrics[f"{name}/rmse"] = rmse(target_labels[:, t], out[:, 0, t])
            continue
        y = np.zeros(out.shape[:2], dtype=np.float64)
        y[:, 0] = target_labels[:, t]
        p = 1 / (1 + np.exp(-out[..., t].astype(np.float64)))
        u = np.repeat(case_users, out.shape[1])
        metrics[f"{name}/auc"] = auc(y.ravel(), p.ravel())
        metrics[f"{name}/gauc"], metrics[f"{name}/gauc_users"] = gauc(u, y.ravel(), p.ravel())
        metrics[f"{name}/log_loss"] = log_loss(y.ravel(), p.ravel())
    return metrics
