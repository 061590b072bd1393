"""Training a ranker: impressions from the training windows, a multitask loss plus the backbone's
next-item loss.

Each target event of a window is an impression labelled from the data (MovieLens: like = rating >= 4,
rating); `negatives` sampled items per target are impressions labelled 0 for the binary heads
(MovieLens logs no non-clicks; the regression heads ignore them). They are drawn uniformly, in
proportion to the items' training events (`negative_sampler: popularity`), or among the backbone's
own top `hard_pool` items for the history (`hard`: the candidates a reranker of a retrieval stage
sees); a draw that is the target itself is redrawn once and then left (rare). Loss = sum over tasks
of weight * task loss (BCE for binary heads, MSE for regression) + aux_weight * the retrieval loss
of the backbone's user vectors at every position (as `NextItemObjective`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from genrec.config import TrainConfig
from genrec.data.batching import NextItemExamples, SequenceBatch
from genrec.data.dataset import Sequences
from genrec.errors import ConfigError
from genrec.models.ranking import EmbeddingRanker, Impressions, Ranker
from genrec.models.ranking_config import TaskConfig
from genrec.train.distributed import DistContext
from genrec.train.objectives import WindowObjective, build_loss


def task_labels(tasks: list[TaskConfig], interactions: pa.Table) -> np.ndarray:
    """[E, T] float32 each event's label per task, from the interactions' columns (aligned with the
    dataset's sequences)."""
    columns = []
    for task in tasks:
        if task.is_event:
            columns.append(np.ones(interactions.num_rows, dtype=np.float32))
            continue
        if task.column not in interactions.column_names:
            raise ConfigError(
                f"model.tasks[{task.name}] reads {task.column!r}, which this dataset's events do not have "
                f"(columns: {', '.join(interactions.column_names)})"
            )
        values = interactions[task.column].to_numpy().astype(np.float32)
        columns.append(values if task.threshold is None else (values >= task.threshold).astype(np.float32))
    return np.stack(columns, axis=1)


def event_users(sequences: Sequences) -> np.ndarray:
    """[E] int64 the user of each event of `sequences`."""
    return np.repeat(np.arange(len(sequences.offsets) - 1), sequences.lengths)


class EventLabels:
    """(user, item) -> the labels [T] of the user's event with the item (the latest, if repeated)."""

    def __init__(self, sequences: Sequences, labels: np.ndarray, num_items: int) -> None:
        """labels: [E, T] aligned with `sequences.items`."""
        users = event_users(sequences)
        keys = users.astype(np.int64) * (num_items + 1) + sequences.items
        order = np.argsort(keys, kind="stable")
        self.keys = torch.from_numpy(keys[order])
        self.labels = torch.from_numpy(labels[order])
        self.num_items = num_items

    def mean_of(self, sequences: Sequences) -> torch.Tensor:
        """[T] the mean label over the events of `sequences` (the training events)."""
        return self(torch.from_numpy(event_users(sequences)), torch.from_numpy(sequences.items)).mean(0)

    def __call__(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users [E], items [E] (each an event of that user) -> [E, T]."""
        keys = users.cpu() * (self.num_items + 1) + items.cpu()
        index = torch.searchsorted(self.keys, keys, right=True) - 1
        if not torch.equal(self.keys[index.clamp(min=0)], keys):
            raise ValueError("a (user, item) pair that is no event of the data has no label")
        return self.labels[index].to(items.device)


class RankingObjective(WindowObjective):
    """The multitask loss of a ranker over impressions cut from the training windows; see the module
    docstring. At most `examples_per_window` targets per window (the latest) are impressions."""

    model: Ranker
    # the auxiliary loss runs the backbone outside the DistributedDataParallel wrapper
    supports_ddp = False

    def __init__(
        self,
        model: Ranker,
        train: Sequences,
        config: TrainConfig,
        seed: int,
        dist: DistContext,
        device: torch.device,
        labels: EventLabels,
        examples_per_window: int = 8,
        valid_metrics: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        """valid_metrics: the ranker's per-task validation metrics, added to each validation (the
        trainer then selects on `model.config.selection_metric` when it is set)."""
        aux = None
        if model.config.aux_weight > 0 and not isinstance(model, EmbeddingRanker):
            aux = build_loss(config.loss, model.backbone, reduction="sum")
        super().__init__(model, train, config, seed, dist, device, aux)
        self.aux = aux
        self.labels = labels
        self.examples_per_window = examples_per_window
        self.valid_metrics = valid_metrics
        self.selection_metric = model.config.selection_metric if valid_metrics is not None else None
        counts = np.bincount(train.items, minlength=model.num_items + 1)[: model.num_items + 1].astype(np.float64)
        counts[0] = 0.0
        self.popularity = torch.from_numpy(counts).float().to(device)  # [N+1] training events per item

    def extra_valid_metrics(self) -> dict[str, float]:
        return {} if self.valid_metrics is None else self.valid_metrics()

    @torch.no_grad()
    def sample_negatives(self, examples: NextItemExamples) -> torch.Tensor:
        """[E, K] negative items for the E examples (see the module docstring)."""
        config = self.model.config
        E, K = len(examples.targets), config.negatives
        device = examples.targets.device
        if config.negative_sampler == "popularity":
            draw = lambda: torch.multinomial(self.popularity, E * K, replacement=True).reshape(E, K)  # noqa: E731
        elif config.negative_sampler == "hard":
            pool = self.hard_pool(examples)  # [E, P]
            draw = lambda: pool.gather(1, torch.randint(0, pool.shape[1], (E, K), device=device))  # noqa: E731
        else:
            draw = lambda: torch.randint(1, self.model.num_items + 1, (E, K), device=device)  # noqa: E731
        negatives = draw()
        hit = negatives == examples.targets[:, None]
        return torch.where(hit, draw(), negatives)

    def hard_pool(self, examples: NextItemExamples) -> torch.Tensor:
        """[E, P] the backbone's top `hard_pool` items after each example's history (the target left out)."""
        backbone = self.model.backbone
        was_training = backbone.training
        backbone.eval()
        users = backbone.last_user_vectors(
            examples.history, examples.timestamps, examples.lengths.clamp(min=1), examples.target_timestamps
        )
        backbone.train(was_training)
        scores = users.float() @ backbone.all_item_vectors().float().T  # [E, N+1]
        scores[:, 0] = -torch.inf
        scores[torch.arange(len(scores), device=scores.device), examples.targets] = -torch.inf
        return scores.topk(min(self.model.config.hard_pool, self.model.num_items - 1), dim=1).indices

    def summed_loss(self, batch: SequenceBatch, module: nn.Module) -> torch.Tensor:
        config = self.model.config
        keep = batch.targets != 0  # [B, L]
        # the latest `examples_per_window` targets of each row
        from_end = keep.flip(1).cumsum(1).flip(1)
        examples = SequenceBatch(
            batch.users,
            batch.items,
            batch.timestamps,
            batch.lengths,
            batch.targets * (from_end <= self.examples_per_window),
            batch.target_timestamps,
        ).next_item_examples(self.model.max_len)
        E = len(examples.users)
        negatives = self.sample_negatives(examples)
        candidates = torch.cat([examples.targets[:, None], negatives], dim=1)  # [E, 1 + K]
        impressions = Impressions(
            examples.users,
            examples.history,
            examples.timestamps,
            examples.lengths,
            candidates,
            examples.target_timestamps,
        )
        logits = module(impressions).float()  # [E, 1 + K, T]
        labels = self.labels(examples.users, examples.targets)  # [E, T]
        # the loss is summed over the batch's targets (the trainer divides by their number)
        scale = (keep.sum() / max(E, 1)).float()
        total = torch.zeros((), device=logits.device)
        for t, task in enumerate(config.tasks):
            if task.kind == "binary":
                target = torch.zeros_like(logits[..., t])
                target[:, 0] = labels[:, t]
                loss = F.binary_cross_entropy_with_logits(logits[..., t], target, reduction="none").sum(1).sum()
            else:
                loss = F.mse_loss(logits[:, 0, t], labels[:, t], reduction="sum")
            total = total + task.weight * loss * scale
        if self.aux is not None:
            backbone = self.model.backbone
            hidden = backbone(batch.items, batch.timestamps, batch.lengths, batch.target_timestamps)  # [B, L, D]
            total = total + config.aux_weight * self.aux(hidden[keep], batch.targets[keep], backbone)
        return total
