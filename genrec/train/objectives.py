"""What the trainer optimises: an objective is a source of batches and the loss of one batch.

The `Trainer` owns everything that is the same for every objective (device placement, the
optimizer, schedules, AMP, gradient clipping, validation, early stopping, checkpoints, exact resume,
DDP, curves); an objective owns what differs:

- `NextItemObjective`: a sequential model's user vectors scored by a retrieval loss (full, sampled,
  in-batch softmax or InfoNCE) at every position of each training window (SASRec, HSTU, HLLM, and a
  causal LM over item ids);
- `GenerativeObjective`: the same windows, but the model computes its own loss (the cross-entropy of
  the next item's semantic-ID tokens: TIGER, the SID LLM's SFT);
- `genrec.llm.grpo.GRPOObjective`: prompts sampled from the training histories, candidates from the
  constrained beam search, a policy-gradient step (the SID LLM's RL stage).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from genrec.config import LossConfig, TrainConfig
from genrec.data.batching import SequenceBatch, TrainSequences
from genrec.data.dataset import Sequences
from genrec.errors import DataError, GenrecError
from genrec.models.base import GenerativeRecommender, Recommender, SequentialRecommender
from genrec.train.distributed import DistContext
from genrec.train.losses import (
    FullSoftmaxLoss,
    InBatchNegatives,
    SampledSoftmaxLoss,
    SharedPoolInfoNCE,
    UniformNegatives,
)


@dataclass
class StepContext:
    """What the trainer lends an objective for one step.

    module:   the model to call for the forward pass (wrapped in DistributedDataParallel under torchrun)
    autocast: a context manager factory: the forward passes run inside it (bf16 when AMP is on)
    """

    module: nn.Module
    device: torch.device
    dist: DistContext
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext


@dataclass
class StepResult:
    """The outcome of one step's forward and backward passes.

    loss:   scalar tensor, the step's loss as optimised (checked for NaN before the optimizer steps)
    weight: what the step's numbers are averaged by over an epoch (targets, or 1 per step)
    rows:   training sequences (or prompts) the step read, for the throughput figure
    stats:  numbers to log (the loss included), each a mean over this step
    """

    loss: torch.Tensor
    weight: float
    rows: int
    stats: dict[str, float] = field(default_factory=dict)


class Objective(ABC):
    """A source of batches and the backward pass of one batch; see the module docstring."""

    model: Recommender  # the weights that are trained, checkpointed and evaluated
    # trained parameters outside the model (a learned temperature); checkpointed with it
    extra: nn.Module = nn.Module()
    # numbers the run's curves plot beside validation, and whether each step is logged (else each epoch)
    train_keys: tuple[str, ...] = ("loss",)
    log_every_step: bool = False
    # validate the starting weights before the first step (a fine-tuning stage that must beat its start)
    validate_at_start: bool = False
    supports_ddp: bool = True
    # a metric of `extra_valid_metrics` that chooses the checkpoint instead of train.metric (None: train.metric)
    selection_metric: str | None = None

    @abstractmethod
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch."""

    @abstractmethod
    def batches(self, epoch: int, skip: int = 0) -> Iterator[Any]:
        """The batches of `epoch` (1-based) after its first `skip` (those a resumed run already took)."""

    @abstractmethod
    def backward(self, batch: Any, step: StepContext) -> StepResult:
        """Forward and backward passes of one batch (gradients accumulate; the trainer steps)."""

    def parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates: trainable weights of the model and of `extra`."""
        return [p for p in [*self.model.parameters(), *self.extra.parameters()] if p.requires_grad]

    def extra_valid_metrics(self) -> dict[str, float]:
        """Validation metrics of the objective's own (a ranker's heads), logged beside the evaluator's."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Batch-source state a checkpoint needs for an exact resume (none when the order is a
        function of seed and epoch)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (an optional hook: no state by default)
        """Restore `state_dict()`."""


def build_loss(config: LossConfig, model: SequentialRecommender, reduction: str = "mean") -> nn.Module:
    """The loss `config` names, with the temperature defaulted from whether `model` normalises its vectors."""
    temperature = config.temperature
    if temperature is None:
        temperature = 0.05 if model.normalised else 1.0
    if config.name == "full":
        return FullSoftmaxLoss(temperature, reduction=reduction)
    if config.name == "infonce":
        return SharedPoolInfoNCE(
            model.num_items,
            config.num_negatives,
            temperature,
            config.learn_temperature,
            config.false_negative_threshold,
            reduction=reduction,
        )
    sampler_cls = UniformNegatives if config.name == "sampled" else InBatchNegatives
    return SampledSoftmaxLoss(sampler_cls(model.num_items, config.num_negatives), temperature, reduction=reduction)


def micro_batch_size(config: TrainConfig, device: torch.device, model: Recommender | None = None) -> int | None:
    """Rows per forward/backward pass (None = the whole batch); see `TrainConfig.micro_batch_size`."""
    if config.micro_batch_size:
        return config.micro_batch_size
    if isinstance(model, SequentialRecommender) and model.skips_padding(device):
        return None  # no padding to save (BENCHMARKS "HSTU training speed": whole batches are faster)
    return 16 if device.type == "cpu" and not config.loss.uses_whole_batch else None


class WindowObjective(Objective):
    """Training windows of every user (`TrainSequences`), shuffled per epoch as a function of (seed,
    epoch) only, split across processes, and micro-batched; subclasses give the summed loss of a batch.

    The step's loss is divided by the global number of targets, so that N processes (and any
    micro-batching) take the same step as one process with the whole batch.
    """

    def __init__(
        self,
        model: Recommender,
        train: Sequences,
        config: TrainConfig,
        seed: int,
        dist: DistContext,
        device: torch.device,
        loss: nn.Module | None = None,
    ) -> None:
        """loss: trained parameters of the loss (NextItemObjective's loss module), if any."""
        self.model = model
        self.extra = nn.Module() if loss is None else loss.to(device)
        self.windows = TrainSequences(train, model.train_len, config.windows)
        if len(self.windows) == 0:
            raise DataError("no user has 2 or more training events: nothing to train on")
        if config.batch_size % dist.world_size:
            raise GenrecError(
                f"train.batch_size ({config.batch_size}) must be divisible by the number of processes ({dist.world_size})"
            )
        self.sampler = DistributedSampler(
            self.windows, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed
        )
        self.loader = DataLoader(
            self.windows,
            batch_size=config.batch_size // dist.world_size,
            sampler=self.sampler,
            collate_fn=self.windows.collate_windows,
            # the seed a DataLoader draws for its workers at each epoch comes from here, not from the
            # global random state that dropout and negative sampling use (and that checkpoints save)
            generator=torch.Generator().manual_seed(seed),
        )
        self.micro_batch_size = micro_batch_size(config, device, model)

    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def batches(self, epoch: int, skip: int = 0) -> Iterator[SequenceBatch]:
        self.sampler.set_epoch(epoch)
        return islice(iter(self.loader), skip, None)

    @abstractmethod
    def summed_loss(self, batch: SequenceBatch, module: nn.Module) -> torch.Tensor:
        """The loss of `batch` summed over its targets (a scalar)."""

    def backward(self, batch: SequenceBatch, step: StepContext) -> StepResult:
        batch = batch.to(step.device)
        local_targets = (batch.targets != 0).sum()
        scale = step.dist.world_size / step.dist.all_reduce_sum(local_targets.to(torch.float64))
        loss_sum = torch.zeros((), dtype=torch.float64, device=step.device)
        rows = batch.users.numel()
        size = self.micro_batch_size or rows
        # the step is a sum over rows, so their order is free: group similar lengths (a micro-batch
        # pads only to its own longest row; HSTU's chunked attention skips rows that end before a chunk)
        batch = batch.longest_first()
        starts = range(0, rows, size)
        for start in starts:
            part = batch.rows(start, min(start + size, rows))
            # DDP all-reduces gradients on the last micro-batch only
            last = start == starts[-1]
            with nullcontext() if last or not step.dist.enabled else step.module.no_sync():
                with step.autocast():
                    part_loss = self.summed_loss(part, step.module)
                (part_loss * scale).backward()
            loss_sum += part_loss.detach()
        self._average_extra_gradients(step.dist)
        targets = int(local_targets)
        loss = loss_sum * scale
        return StepResult(loss, weight=targets, rows=rows, stats={"loss": loss_sum.item() / max(targets, 1)})

    def _average_extra_gradients(self, dist: DistContext) -> None:
        """DDP averages the model's gradients; `extra` (a learned temperature) is outside it, so
        average its gradients here."""
        if not dist.enabled:
            return
        for param in self.extra.parameters():
            if param.grad is not None:
                param.grad = dist.all_reduce_sum(param.grad) / dist.world_size


class NextItemObjective(WindowObjective):
    """A retrieval loss (`extra`, built by `build_loss` with reduction="sum") over a sequential model's
    user vector at every position that has a target."""

    def summed_loss(self, batch: SequenceBatch, module: nn.Module) -> torch.Tensor:
        hidden = module(batch.items, batch.timestamps, batch.lengths, batch.target_timestamps, batch.users)  # [B, L, D]
        # the positions with a target as flat indices: index_select's backward is an index_add, where a
        # boolean mask's is a slower index_put
        index = (batch.targets != 0).reshape(-1).nonzero().squeeze(1)  # [P]
        users = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)  # [P, D]
        return self.extra(users, batch.targets.reshape(-1)[index], self.model)


class GenerativeObjective(WindowObjective):
    """The model's own loss (the cross-entropy of each target's semantic-ID tokens)."""

    def summed_loss(self, batch: SequenceBatch, module: nn.Module) -> torch.Tensor:
        return module(batch)


def default_objective(
    model: Recommender, train: Sequences, config: TrainConfig, seed: int, dist: DistContext, device: torch.device
) -> WindowObjective:
    """Next-item training for `model`: its own token loss for a generative model, else `config.loss`."""
    if isinstance(model, GenerativeRecommender):
        return GenerativeObjective(model, train, config, seed, dist, device)
    assert isinstance(model, SequentialRecommender)
    # summed over targets here and divided by the global number of targets in `backward`
    loss = build_loss(config.loss, model, reduction="sum")
    return NextItemObjective(model, train, config, seed, dist, device, loss)


def total_steps(objective: Objective, config: TrainConfig) -> int:
    """The steps `train.epochs` and `train.max_steps` allow (what a cosine schedule decays over)."""
    return int(min(config.epochs * objective.steps_per_epoch(), config.max_steps or math.inf))
