"""One trainer for every sequential model: AdamW, schedules, AMP, evaluation, early stopping,
checkpoints that resume exactly, and DistributedDataParallel under torchrun.

Exact resume: the order of training sequences is a function of (seed, epoch) only, and the random
state that drives dropout and negative sampling is saved with every checkpoint, so a run stopped
after any epoch and resumed reaches the same weights as one that never stopped.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from genrec.checkpoints import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    load_checkpoint,
    load_state,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from genrec.config import LossConfig, RunConfig, TrainConfig, to_dict
from genrec.data.batching import SequenceBatch, TrainSequences
from genrec.data.splits import Split
from genrec.errors import CheckpointError, DataError, GenrecError
from genrec.eval.evaluator import evaluate
from genrec.models.base import GenerativeRecommender, Recommender, SequentialRecommender
from genrec.runs import RunDir
from genrec.threads import adapt_threads
from genrec.train.distributed import DistContext
from genrec.train.losses import (
    FullSoftmaxLoss,
    InBatchNegatives,
    SampledSoftmaxLoss,
    SharedPoolInfoNCE,
    UniformNegatives,
)
from genrec.train.trackers import RunLog

log = logging.getLogger("genrec.train")


PLOT_EVERY_SECONDS = 10.0  # curves.png is redrawn at most this often while training (and at the end)


def format_seconds(seconds: float) -> str:
    """1h02m, 3m05s or 42s."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class TrainingError(GenrecError):
    """Training cannot go on (e.g. the loss became NaN)."""


def micro_batch_size(config: TrainConfig, device: torch.device) -> int | None:
    """Rows per forward/backward pass (None = the whole batch); see `TrainConfig.micro_batch_size`."""
    if config.micro_batch_size:
        return config.micro_batch_size
    return 16 if device.type == "cpu" and not config.loss.uses_whole_batch else None


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


def build_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then constant or cosine decay to 0 at `total_steps`."""
    warmup = config.warmup_steps if config.warmup_fraction is None else int(config.warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0
    best_metric: float = -math.inf
    best_epoch: int = 0
    evals_without_improvement: int = 0
    stopped_early: bool = False


class Trainer:
    """Trains `model` on `split.train` and selects it on `split.valid` (test is touched once, at the end)."""

    def __init__(
        self,
        model: Recommender,
        split: Split,
        config: RunConfig,
        run_dir: RunDir | None,
        context: DistContext | None = None,
        device: torch.device | None = None,
        progress: bool = True,
    ) -> None:
        config.check_trainable()
        context = context or DistContext()
        self.config, self.split, self.run_dir, self.context = config, split, run_dir, context
        self.train_config = config.train
        self.device = device or resolve_device(config.train.device)
        self.model = model.to(self.device)
        self.module: nn.Module = DistributedDataParallel(model) if context.enabled else model
        # summed here and divided by the global number of targets, so that N processes take the
        # same step as one process with the whole batch (DDP averages gradients over processes)
        # a generative model computes its own loss (cross-entropy of the next item's tokens)
        self.generative = isinstance(model, GenerativeRecommender)
        self.loss = (
            nn.Module() if self.generative else build_loss(config.train.loss, model, reduction="sum").to(self.device)
        )
        self.progress = progress and context.is_main
        self.dataset = TrainSequences(split.train, model.train_len, config.train.windows)
        if len(self.dataset) == 0:
            raise DataError("no user has 2 or more training events: nothing to train on")
        batch_size = config.train.batch_size
        if batch_size % context.world_size:
            raise GenrecError(
                f"train.batch_size ({batch_size}) must be divisible by the number of processes ({context.world_size})"
            )
        self.sampler = DistributedSampler(
            self.dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=config.seed
        )
        self.loader = DataLoader(
            self.dataset,
            batch_size=batch_size // context.world_size,
            sampler=self.sampler,
            collate_fn=self.dataset.collate_windows,
        )
        t = config.train
        # the loss may have parameters too (a learned temperature); frozen weights are left out
        params = [p for p in [*model.parameters(), *self.loss.parameters()] if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        total_steps = min(t.epochs * len(self.loader), t.max_steps or math.inf)
        self.scheduler = build_schedule(self.optimizer, t, total_steps=total_steps)
        self.micro_batch_size = micro_batch_size(t, self.device)
        self.state = TrainState()
        self.best_valid: dict[str, float] | None = None  # metrics of the best checkpoint, when computed in this process
        use_amp = t.amp == "bf16" or (t.amp == "auto" and self.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if use_amp else None
        self._log = RunLog(run_dir, config, enabled=context.is_main)  # metrics.jsonl and the trackers

    # ---- checkpoints -------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": asdict(self.state),
            "rng": rng_state(),
            "config": to_dict(self.config),
        }

    def save(self, name: str, payload: dict[str, Any]) -> None:
        """Write a checkpoint atomically (rank 0 only)."""
        if self.run_dir is None or not self.context.is_main:
            return
        save_checkpoint(self.run_dir.path / name, payload)

    def resume(self, path: Path) -> None:
        """Restore model, optimizer, scheduler, progress and random state from a checkpoint."""
        if not path.is_file():
            raise GenrecError(f"cannot resume: no checkpoint at {path}")
        payload = load_checkpoint(path, self.device)
        missing = [k for k in ("optimizer", "scheduler", "state", "rng") if k not in payload]
        if missing:
            raise CheckpointError(
                f"{path}: cannot resume from it: no {', '.join(missing)} (is it a {LAST_CHECKPOINT}?)"
            )
        load_state(self.model, payload["model"], path)
        load_state(self.loss, payload.get("loss", {}), path, "loss parameters")
        load_state(self.optimizer, payload["optimizer"], path, "optimizer state")
        load_state(self.scheduler, payload["scheduler"], path, "schedule")
        try:
            self.state = TrainState(**payload["state"])
        except TypeError:
            raise CheckpointError(f"{path}: its training progress is not in genrec's format") from None
        set_rng_state(payload["rng"])
        if self.run_dir is not None and self.context.is_main:
            # a crash between an epoch's log line and its checkpoint would otherwise log that epoch twice
            self.run_dir.drop_metrics_after(self.state.step)
        log.info("resumed from %s after epoch %d", path, self.state.epoch)

    # ---- training ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.module.train()
        self.sampler.set_epoch(epoch)
        total, count, sequences = 0.0, 0, 0
        started = time.perf_counter()
        bar = tqdm(self.loader, desc=f"epoch {epoch}", unit="batch", disable=not self.progress, leave=False)
        for batch in bar:
            if self.out_of_steps:
                break
            adapt_threads()  # fewer threads while other processes use the cores (when genrec chose the count)
            batch = batch.to(self.device)
            # normalise by the global number of targets so that N processes (and any micro-batching)
            # take the same step as one process with the whole batch
            local_targets = (batch.targets != 0).sum()
            scale = self.context.world_size / self.context.all_reduce_sum(local_targets.to(torch.float64))
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
            rows = batch.users.numel()
            step = self.micro_batch_size or rows
            if step < rows:  # the step is a sum over rows, so their order is free: group similar lengths
                batch = batch.longest_first()
            starts = range(0, rows, step)
            for start in starts:
                part = batch.rows(start, min(start + step, rows))
                # DDP all-reduces gradients on the last micro-batch only
                last = start == starts[-1]
                with nullcontext() if last or not self.context.enabled else self.module.no_sync():
                    part_loss = self._loss(part)
                    (part_loss * scale).backward()
                loss_sum += part_loss.detach()
            loss = loss_sum * scale
            self._all_reduce_loss_gradients()
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the loss became {loss.item()} at epoch {epoch}, step {self.state.step + 1}; try a "
                    f"lower train.lr, a train.grad_clip, or train.amp=off"
                )
            if self.train_config.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.train_config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.state.step += 1
            total += loss_sum.item()
            count += int(local_targets)
            sequences += rows
            bar.set_postfix(loss=f"{total / count:.4f}", seq_per_s=f"{sequences / (time.perf_counter() - started):.0f}")
        seconds = time.perf_counter() - started
        sums = self.context.all_reduce_sum(torch.tensor([total, count, sequences], dtype=torch.float64))
        return {"loss": float(sums[0] / sums[1]), "seconds": seconds, "sequences_per_s": float(sums[2]) / seconds}

    @property
    def out_of_steps(self) -> bool:
        """True once `train.max_steps` optimizer steps have been taken."""
        return self.train_config.max_steps is not None and self.state.step >= self.train_config.max_steps

    def _all_reduce_loss_gradients(self) -> None:
        """DDP averages the model's gradients; the loss's own parameters (a learned temperature) are
        outside it, so average theirs here."""
        if not self.context.enabled:
            return
        for param in self.loss.parameters():
            if param.grad is not None:
                param.grad = self.context.all_reduce_sum(param.grad) / self.context.world_size

    def _loss(self, batch: SequenceBatch) -> torch.Tensor:
        """Summed loss over the batch's targets."""
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None
        ):
            if self.generative:
                return self.module(batch)
            hidden = self.module(batch.items, batch.timestamps, batch.lengths, batch.target_timestamps)  # [B, L, D]
            has_target = batch.targets != 0  # [B, L]
            return self.loss(hidden[has_target], batch.targets[has_target], self.model)

    @torch.no_grad()
    def evaluate(self, which: str) -> dict[str, float]:
        """Full-ranking metrics on the validation or test cases, sharded over the processes."""
        self.model.eval()
        e = self.config.eval
        cases = (
            self.split.cases(which).sample(e.max_cases).take(slice(self.context.rank, None, self.context.world_size))
        )
        started = time.perf_counter()
        metrics = evaluate(
            self.model.scorer(),
            self.split.sequences,
            cases,
            self.model.num_items,
            ks=e.ks,
            batch_size=e.batch_size,
            max_history=self.model.max_len,
            mask_history=e.mask_history,
            device=self.device,
            progress=self.progress,
            desc=f"eval {which}",
        )
        names = [k for k in metrics if k != "num_users"]
        n = metrics["num_users"]
        sums = self.context.all_reduce_sum(torch.tensor([metrics[k] * n for k in names] + [n], dtype=torch.float64))
        total = float(sums[-1])
        result = {k: float(sums[i]) / max(total, 1.0) for i, k in enumerate(names)}
        return {**result, "num_users": int(total), "seconds": time.perf_counter() - started}

    def fit(self, stop_after_epoch: int | None = None) -> dict[str, Any] | None:
        """Train until `train.epochs` or early stopping, then test the best checkpoint once.

        stop_after_epoch: return None after that epoch (as if the run were interrupted); the run
        directory can then be resumed.
        """
        try:
            return self._fit(stop_after_epoch)
        finally:
            self._log.close()  # an interrupted or failed run ends its tracker runs too

    def _fit(self, stop_after_epoch: int | None) -> dict[str, Any] | None:
        t = self.train_config
        metric = t.metric
        started, first_epoch, last_plot = time.perf_counter(), self.state.epoch, -math.inf
        while self.state.epoch < t.epochs and not self.state.stopped_early and not self.out_of_steps:
            epoch = self.state.epoch + 1
            stats = self.train_epoch(epoch)
            self._log({"split": "train", "epoch": epoch, "step": self.state.step, **stats})
            message = (
                f"epoch {epoch}/{self.planned_epochs}: loss {stats['loss']:.4f} ({stats['sequences_per_s']:.0f} seq/s)"
            )
            if self.out_of_steps:
                message += f" (train.max_steps={t.max_steps} reached)"
            if epoch % t.eval_every == 0 or epoch == t.epochs or self.out_of_steps:
                valid = self.evaluate("valid")
                self._log({"split": "valid", "epoch": epoch, "step": self.state.step, **valid})
                message += f", valid {metric} {valid[metric]:.4f}"
                if valid[metric] > self.state.best_metric:
                    self.state.best_metric, self.state.best_epoch = valid[metric], epoch
                    self.state.evals_without_improvement = 0
                    self.save(BEST_CHECKPOINT, {"model": self.model.state_dict(), "epoch": epoch})
                    self.best_valid = valid
                    message += " (best)"
                else:
                    message += f" (best {self.state.best_metric:.4f} at epoch {self.state.best_epoch})"
                    self.state.evals_without_improvement += 1
                    if t.patience is not None and self.state.evals_without_improvement >= t.patience:
                        self.state.stopped_early = True
                        message += f" (no improvement in {t.patience} evaluations: stopping)"
            self.state.epoch = epoch
            self.save(LAST_CHECKPOINT, self.checkpoint())
            if self.context.is_main:
                elapsed = time.perf_counter() - started
                remaining = (self.planned_epochs - epoch) * elapsed / (epoch - first_epoch)
                more = (
                    ""
                    if self.state.stopped_early or self.out_of_steps or remaining == 0
                    else f", at most {format_seconds(remaining)} to go"
                )
                log.info("%s [%s%s]", message, format_seconds(elapsed), more)
                if self.run_dir is not None and time.perf_counter() - last_plot >= PLOT_EVERY_SECONDS:
                    self._plot()
                    last_plot = time.perf_counter()
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                self._plot()
                return None
        self._plot()
        return self.finish()

    @property
    def planned_epochs(self) -> int:
        """The epochs `train.epochs` and `train.max_steps` allow (early stopping may end sooner)."""
        t = self.train_config
        if t.max_steps is None:
            return t.epochs
        return min(t.epochs, self.state.epoch + math.ceil((t.max_steps - self.state.step) / max(1, len(self.loader))))

    def _plot(self) -> None:
        if self.run_dir is not None and self.context.is_main:
            from genrec.train.plots import plot_run

            plot_run(self.run_dir.path)

    def finish(self) -> dict[str, Any]:
        """Load the best checkpoint (if any) and compute validation and test metrics once."""
        self.context.barrier()
        known_valid = None
        if self.run_dir is not None and (self.run_dir.path / BEST_CHECKPOINT).is_file():
            load_weights(self.model, self.run_dir.path / BEST_CHECKPOINT, self.device)
            # the best checkpoint's validation metrics are reused when this process computed them (an
            # evaluation is deterministic, and a generative model's beam search makes it costly)
            known_valid = self.best_valid
        results = {"valid": known_valid or self.evaluate("valid"), "test": self.evaluate("test")}
        for which, metrics in results.items():
            self._log({"split": which, "epoch": self.state.best_epoch, "final": True, **metrics})
        return {
            **results,
            "best_epoch": self.state.best_epoch,
            "epochs": self.state.epoch,
            "stopped_early": self.state.stopped_early,
        }
