"""One trainer for every objective: AdamW, schedules, AMP, gradient clipping, validation, early
stopping, checkpoints that resume exactly, DistributedDataParallel under torchrun, and curves.

What is optimised comes from an `Objective` (`genrec.train.objectives`): next-item retrieval losses,
the token loss of generative models, GRPO. The trainer calls `objective.backward(batch)` and does
the rest the same way for all of them.

Exact resume: batches are a function of (seed, epoch) (or of a generator the objective saves), and
the random state that drives dropout and negative sampling is saved with every checkpoint, so a run
stopped after any checkpoint and resumed reaches the same weights as one that never stopped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
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
from genrec.config import RunConfig, TrainConfig, to_dict
from genrec.data.splits import Split
from genrec.errors import CheckpointError, GenrecError
from genrec.eval.evaluator import evaluate
from genrec.models.base import Recommender
from genrec.run_dir import RunDir
from genrec.threads import adapt_threads
from genrec.train.distributed import DistContext
from genrec.train.objectives import Objective, StepContext, default_objective, total_steps
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
    step: int = 0  # optimizer steps taken
    epoch_step: int = 0  # steps taken in the epoch under way (a checkpoint between two validations)
    best_metric: float = -math.inf
    best_epoch: int = 0
    best_step: int = 0
    last_valid_step: int = -1  # the step of the latest validation
    evals_without_improvement: int = 0
    stopped_early: bool = False


def adamw(parameters: list[nn.Parameter], **hyper: Any) -> torch.optim.AdamW:
    """AdamW, with torch's fused kernel where every parameter is a float on a CPU or a GPU: one
    call per step instead of about ten operators per parameter."""
    if parameters and all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in parameters):
        try:
            return torch.optim.AdamW(parameters, fused=True, **hyper)
        except RuntimeError:  # torch < 2.4 fuses on GPUs only
            pass
    return torch.optim.AdamW(parameters, **hyper)


class Trainer:
    """Trains `model` on `split.train` and selects it on `split.valid` (test is touched once, at the end).

    objective: what is optimised; default: next-item training (`default_objective`).
    """

    def __init__(
        self,
        model: Recommender,
        split: Split,
        config: RunConfig,
        run_dir: RunDir | None,
        context: DistContext | None = None,
        device: torch.device | None = None,
        progress: bool = True,
        objective: Objective | None = None,
    ) -> None:
        config.check_trainable()
        context = context or DistContext()
        self.config, self.split, self.run_dir, self.context = config, split, run_dir, context
        self.train_config = t = config.train
        self.device = device or resolve_device(t.device)
        self.model = model.to(self.device)
        if objective is None:
            objective = default_objective(model, split.train, t, config.seed, context, self.device)
        elif objective.model is not model:
            raise ValueError("the objective trains another model than the one given to the trainer")
        if context.enabled and not objective.supports_ddp:
            raise GenrecError(f"{type(objective).__name__} runs in one process: start it without torchrun")
        self.objective = objective
        self.module: nn.Module = DistributedDataParallel(model) if context.enabled else model
        self.progress = progress and context.is_main
        self.optimizer = adamw(objective.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        self.scheduler = build_schedule(self.optimizer, t, total_steps=total_steps(objective, t))
        self.state = TrainState()
        self.best_valid: dict[str, float] | None = None  # metrics of the best checkpoint, when computed in this process
        use_amp = t.amp == "bf16" or (t.amp == "auto" and self.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if use_amp else None
        self.step_context = StepContext(self.module, self.device, context, self._autocast)
        self._log = RunLog(run_dir, config, enabled=context.is_main)  # metrics.jsonl and the trackers
        self._last_plot = -math.inf
        self._interrupted = False
        self._stop_after_step: int | None = None

    def _autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(
            self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None
        )

    # ---- checkpoints -------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "loss": self.objective.extra.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "objective": self.objective.state_dict(),
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
        if "generator" in payload and "state" not in payload:
            raise CheckpointError(
                f"{path}: written by GRPO before it ran on the shared trainer; it cannot be resumed (start the RL run again)"
            )
        missing = [k for k in ("optimizer", "scheduler", "state", "rng") if k not in payload]
        if missing:
            raise CheckpointError(
                f"{path}: cannot resume from it: no {', '.join(missing)} (is it a {LAST_CHECKPOINT}?)"
            )
        load_state(self.model, payload["model"], path)
        load_state(self.objective.extra, payload.get("loss", {}), path, "loss parameters")
        load_state(self.optimizer, payload["optimizer"], path, "optimizer state")
        load_state(self.scheduler, payload["scheduler"], path, "schedule")
        try:
            self.state = TrainState(**payload["state"])
            self.objective.load_state_dict(payload.get("objective", {}))
        except (TypeError, KeyError, RuntimeError):
            raise CheckpointError(f"{path}: its training progress is not in genrec's format") from None
        set_rng_state(payload["rng"])
        if self.run_dir is not None and self.context.is_main:
            # a crash between a log line and its checkpoint would otherwise log that step twice
            self.run_dir.drop_metrics_after(self.state.step)
        log.info("resumed from %s after step %d (epoch %d)", path, self.state.step, self.state.epoch)

    # ---- training ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int, batches: Iterable[Any] | None = None) -> dict[str, float]:
        """Train on the batches of `epoch` (default: the objective's, after those a resumed run took);
        validates in between when `train.eval_every_steps` says so. Returns the epoch's mean stats."""
        t = self.train_config
        self.module.train()
        skip = self.state.epoch_step
        if batches is None:
            batches = self.objective.batches(epoch, skip)
        sums: dict[str, float] = {}
        weight, rows = 0.0, 0
        started = time.perf_counter()
        bar = tqdm(
            batches,
            desc=f"epoch {epoch}",
            unit="step",
            total=max(0, self.objective.steps_per_epoch() - skip),
            disable=not self.progress,
            leave=False,
        )
        for batch in bar:
            adapt_threads()  # fewer threads while other processes use the cores (when genrec chose the count)
            step_started, lr = time.perf_counter(), self.optimizer.param_groups[0]["lr"]
            self.optimizer.zero_grad(set_to_none=True)
            result = self.objective.backward(batch, self.step_context)
            if not torch.isfinite(result.loss):
                raise TrainingError(
                    f"the loss became {result.loss.item()} at epoch {epoch}, step {self.state.step + 1}; try a "
                    f"lower train.lr, a train.grad_clip, or train.amp=off"
                )
            if t.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.state.step += 1
            self.state.epoch_step += 1
            for key, value in result.stats.items():
                sums[key] = sums.get(key, 0.0) + value * result.weight
            weight += result.weight
            rows += result.rows
            if self.objective.log_every_step:
                record = {"split": "train", "epoch": epoch, "step": self.state.step, **result.stats, "lr": lr}
                self._log({**record, "seconds": time.perf_counter() - step_started})
            elapsed = time.perf_counter() - started
            bar.set_postfix(
                {k: f"{v / max(weight, 1e-12):.4f}" for k, v in sums.items()} | {"rows/s": f"{rows / elapsed:.0f}"}
            )
            if t.eval_every_steps is not None and self.state.step % t.eval_every_steps == 0:
                message = self._validate(epoch)
                if self.context.is_main:
                    log.info("step %d: %s", self.state.step, message)
                self.save(LAST_CHECKPOINT, self.checkpoint())
                self._maybe_plot()
                self.module.train()
                if self._stop_after_step is not None and self.state.step >= self._stop_after_step:
                    self._interrupted = True
            # checked here, not before taking the next batch: a batch source with state (GRPO's prompt
            # sampler) must not draw a batch that is never trained on before its state is saved
            if self._interrupted or self.out_of_steps or self.state.stopped_early:
                break
        seconds = time.perf_counter() - started
        keys = sorted(sums)
        reduced = self.context.all_reduce_sum(
            torch.tensor([sums[k] for k in keys] + [weight, rows], dtype=torch.float64)
        )
        total_weight = max(float(reduced[-2]), 1e-12)
        stats = {k: float(reduced[i]) / total_weight for i, k in enumerate(keys)}
        return {**stats, "seconds": seconds, "sequences_per_s": float(reduced[-1]) / max(seconds, 1e-9)}

    @property
    def out_of_steps(self) -> bool:
        """True once `train.max_steps` optimizer steps have been taken."""
        return self.train_config.max_steps is not None and self.state.step >= self.train_config.max_steps

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

    def _validate(self, epoch: int) -> str:
        """Validate, keep the best checkpoint, count towards patience; returns the log message's part."""
        t, s = self.train_config, self.state
        metric = self.objective.selection_metric or t.metric
        valid = self.evaluate("valid")
        valid.update(self.objective.extra_valid_metrics())
        self._log({"split": "valid", "epoch": epoch, "step": s.step, **valid})
        s.last_valid_step = s.step
        message = f"valid {metric} {valid[metric]:.4f}"
        if valid[metric] > s.best_metric:
            s.best_metric, s.best_epoch, s.best_step = valid[metric], epoch, s.step
            s.evals_without_improvement = 0
            self.save(BEST_CHECKPOINT, {"model": self.model.state_dict(), "epoch": epoch, "step": s.step})
            self.best_valid = valid
            return message + " (best)"
        where = f"step {s.best_step}" if self.counts_steps else f"epoch {s.best_epoch}"
        message += f" (best {s.best_metric:.4f} at {where})"
        s.evals_without_improvement += 1
        if t.patience is not None and s.evals_without_improvement >= t.patience:
            s.stopped_early = True
            message += f" (no improvement in {t.patience} evaluations: stopping)"
        return message

    @property
    def counts_steps(self) -> bool:
        """True when validation and curves count optimizer steps rather than epochs."""
        return self.train_config.eval_every_steps is not None or self.objective.log_every_step

    def fit(self, stop_after_epoch: int | None = None, stop_after_step: int | None = None) -> dict[str, Any] | None:
        """Train until `train.epochs`, `train.max_steps` or early stopping, then test the best checkpoint once.

        stop_after_epoch / stop_after_step: return None after that epoch, or after the first
        checkpoint at or past that step (as if the run were interrupted); the run directory can
        then be resumed.
        """
        self._stop_after_step = stop_after_step
        try:
            return self._fit(stop_after_epoch)
        finally:
            self._log.close()  # an interrupted or failed run ends its tracker runs too

    def _fit(self, stop_after_epoch: int | None) -> dict[str, Any] | None:
        t, s = self.train_config, self.state
        if self.objective.validate_at_start and s.step == 0 and s.last_valid_step < 0:
            message = self._validate(epoch=0)
            log.info("before training: %s", message)
        started, first_epoch = time.perf_counter(), s.epoch
        while s.epoch < t.epochs and not s.stopped_early and not self.out_of_steps:
            epoch = s.epoch + 1
            stats = self.train_epoch(epoch)
            if self._interrupted:
                self._plot()
                return None
            if not self.objective.log_every_step:
                self._log({"split": "train", "epoch": epoch, "step": s.step, **stats})
            message = f"epoch {epoch}/{self.planned_epochs}: loss {stats.get('loss', math.nan):.4f} ({stats['sequences_per_s']:.0f} seq/s)"
            if self.out_of_steps:
                message += f" (train.max_steps={t.max_steps} reached)"
            final = epoch == t.epochs or self.out_of_steps
            by_epoch = t.eval_every_steps is None and epoch % t.eval_every == 0
            if not s.stopped_early and (by_epoch or final) and s.last_valid_step != s.step:
                message += ", " + self._validate(epoch)
            s.epoch, s.epoch_step = epoch, 0
            self.save(LAST_CHECKPOINT, self.checkpoint())
            if self.context.is_main:
                elapsed = time.perf_counter() - started
                remaining = (self.planned_epochs - epoch) * elapsed / max(epoch - first_epoch, 1)
                more = (
                    ""
                    if s.stopped_early or self.out_of_steps or remaining == 0
                    else f", at most {format_seconds(remaining)} to go"
                )
                log.info("%s [%s%s]", message, format_seconds(elapsed), more)
                self._maybe_plot()
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
        per_epoch = max(1, self.objective.steps_per_epoch())
        left = t.max_steps - self.state.step + self.state.epoch_step  # counted from the start of the epoch under way
        return min(t.epochs, self.state.epoch + math.ceil(max(left, 0) / per_epoch))

    def _maybe_plot(self) -> None:
        if time.perf_counter() - self._last_plot >= PLOT_EVERY_SECONDS:
            self._plot()
            self._last_plot = time.perf_counter()

    def _plot(self) -> None:
        if self.run_dir is not None and self.context.is_main:
            from genrec.train.plots import plot_run

            x = "step" if self.counts_steps else "epoch"
            plot_run(self.run_dir.path, self.train_config.metric, x=x, train_keys=self.objective.train_keys)

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
        s = self.state
        for which, metrics in results.items():
            self._log({"split": which, "epoch": s.best_epoch, "step": s.best_step, "final": True, **metrics})
        return {
            **results,
            "best_epoch": s.best_epoch,
            "best_step": s.best_step,
            "epochs": s.epoch,
            "steps": s.step,
            "stopped_early": s.stopped_early,
        }
