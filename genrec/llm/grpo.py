"""GRPO for the SID LLM recommender (MiniOneRec's RL stage), compact and on genrec's own pieces.

For each prompt (a training history), `num_generations` candidate SIDs come from the constrained
beam search, so every candidate is a real item and the group holds distinct items ranked by the
model. Each candidate gets a reward; advantages are the rewards normalised within the group;
the loss raises the log-probability of candidates with positive advantage, with a KL penalty
(the k3 estimator, per token) to the frozen SFT model:

    loss = mean over candidates and tokens of  -A * exp(logp - logp.detach()) + beta * KL_k3(ref || pi)

(one update per generation, so the PPO ratio is 1 and its clipping never applies.)

Rewards ([P, G] for P prompts and G candidates, candidates best first):
- `rule`: 1 when the candidate is the target item, else 0.
- `ranking`: `rule` plus, in groups that contain the target, a penalty for each wrong candidate
  that grows with its rank in the beam: -w_k / sum_j w_j with w_k = 1 / log2(k + 2) (k = 0 best),
  so confident wrong answers cost most (MiniOneRec's ranking reward).
- `collaborative`: the probability a trained genrec sequential model (e.g. SASRec) gives the
  candidate after the history (softmax over the catalogue).
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
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
from genrec.config import RLConfig, RunConfig, config_differences, from_dict, to_dict
from genrec.data.batching import NextItemExamples, TrainSequences
from genrec.data.dataset import Sequences
from genrec.errors import ConfigError, GenrecError
from genrec.eval.evaluator import EvalBatch, Scorer, evaluate
from genrec.io import check_output_not_input
from genrec.items.trie import LevelTables
from genrec.llm.sid_llm import SIDLLM
from genrec.runs import RunDir
from genrec.threads import adapt_threads
from genrec.train.plots import plot_run
from genrec.train.trackers import RunLog
from genrec.train.trainer import build_schedule

log = logging.getLogger("genrec.llm")


# ---- rewards ------------------------------------------------------------------------------------------
def rule_rewards(hits: torch.Tensor) -> torch.Tensor:
    """hits: [P, G] bool, candidate g of prompt p is the target -> [P, G] float rewards."""
    return hits.float()


def rank_penalties(num_generations: int) -> torch.Tensor:
    """[G] the penalty of a wrong candidate at each rank: -w_k / sum(w), w_k = 1 / log2(k + 2)."""
    weights = 1.0 / torch.log2(torch.arange(num_generations, dtype=torch.float64) + 2)
    return (-weights / weights.sum()).float()


def ranking_rewards(hits: torch.Tensor) -> torch.Tensor:
    """`rule` plus the rank penalty of wrong candidates, in groups where the target was generated."""
    penalties = rank_penalties(hits.shape[1]).to(hits.device)[None, :].expand_as(hits)
    group_hit = hits.any(dim=1, keepdim=True)
    return hits.float() + torch.where(group_hit & ~hits, penalties, torch.zeros_like(penalties))


def collaborative_rewards(candidates: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """candidates: [P, G] item indices; scores: [P, N+1] a sequential model's scores after each
    history -> [P, G] the softmax probability of each candidate (column 0, padding, excluded)."""
    probs = scores[:, 1:].float().softmax(dim=-1)
    return probs.gather(1, (candidates - 1).clamp(min=0))


def group_advantages(rewards: torch.Tensor, valid: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """[P, G] (reward - group mean) / (group std + eps) over the valid candidates (0 elsewhere)."""
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (rewards * valid).sum(dim=1, keepdim=True) / count
    var = (((rewards - mean) ** 2) * valid).sum(dim=1, keepdim=True) / count
    return torch.where(valid, (rewards - mean) / (var.sqrt() + eps), torch.zeros_like(rewards))


# ---- one step -----------------------------------------------------------------------------------------
@dataclass
class StepStats:
    loss: float
    reward: float  # mean reward of the valid candidates
    hit_rate: float  # fraction of prompts whose target is among the candidates
    kl: float


def candidate_logprobs(model: SIDLLM, ids: torch.Tensor, mask: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """ids/mask: [P, T] left-padded prompts; candidates: [P, G, L] SID token ids -> [P, G, L] log-probs."""
    P, G, L = candidates.shape
    prompts = ids.repeat_interleave(G, dim=0)
    full = torch.cat([prompts, candidates.reshape(P * G, L)], dim=1)
    full_mask = torch.cat(
        [mask.repeat_interleave(G, dim=0), torch.ones(P * G, L, dtype=mask.dtype, device=mask.device)], dim=1
    )
    labels = torch.full_like(full, -100)
    labels[:, -L:] = candidates.reshape(P * G, L)
    return model.answer_logprobs(full, full_mask, labels)[:, -L:].reshape(P, G, L)


def grpo_step(
    model: SIDLLM,
    reference: SIDLLM,
    optimizer: torch.optim.Optimizer,
    examples: NextItemExamples,
    rl: RLConfig,
    tables: LevelTables,
    grad_clip: float | None = None,
    reward_scorer: Scorer | None = None,
) -> StepStats:
    """Generate, reward, and take one policy-gradient step on a batch of (history -> target) examples."""
    device = model.item_tokens.device
    ids, mask = model.history_prompts(examples.history, examples.lengths)
    model.eval()
    beams = model.generate(ids, mask, tables, num_beams=rl.num_generations)  # [P, G]
    valid = beams.leaves >= 0
    target_tokens = model.item_tokens[examples.targets.to(device)]  # [P, L]
    hits = (beams.tokens == target_tokens[:, None, :]).all(-1) & valid  # [P, G]
    if rl.reward == "rule":
        rewards = rule_rewards(hits)
    elif rl.reward == "ranking":
        rewards = ranking_rewards(hits)
    else:
        assert reward_scorer is not None
        candidates = tables.leaf_items[beams.leaves.clamp(min=0), 0]  # the first item of each SID
        batch = EvalBatch(
            examples.users,
            examples.history,
            torch.zeros_like(examples.history),
            examples.lengths,
            torch.zeros_like(examples.users),
        )
        rewards = collaborative_rewards(candidates, reward_scorer(batch).to(device))
    advantages = group_advantages(rewards, valid)  # [P, G]
    model.train()
    optimizer.zero_grad(set_to_none=True)
    logp = candidate_logprobs(model, ids, mask, beams.tokens)  # [P, G, L]
    with torch.no_grad():
        ref_logp = candidate_logprobs(reference, ids, mask, beams.tokens)
    delta = ref_logp - logp
    kl = delta.exp() - delta - 1  # k3: unbiased, >= 0
    per_token = -advantages[..., None] * (logp - logp.detach()).exp() + rl.beta * kl
    weight = valid[..., None].expand_as(per_token).float()
    loss = (per_token * weight).sum() / weight.sum().clamp(min=1)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    optimizer.step()
    return StepStats(
        float(loss.detach()),
        float((rewards * valid).sum() / valid.sum().clamp(min=1)),
        float(hits.any(dim=1).float().mean()),
        float((kl.detach() * weight).sum() / weight.sum().clamp(min=1)),
    )


# ---- the RL run ---------------------------------------------------------------------------------------
def rl_config(config_path: str | Path | None, overrides: list[str], sft_run: Path) -> RunConfig:
    """The SFT run's config, with the sections the RL file gives (any of name, seed, rl, train, eval)
    and the overrides on top. The model section stays the SFT run's."""
    import yaml

    from genrec.config import apply_overrides, resolve_config_path

    sft = RunDir.open(sft_run).config()
    if sft.model.name != "sid-llm" or not (sft_run / "best.pt").is_file():
        raise ConfigError(
            f"--from {sft_run}: RL starts from a trained sid-llm run (`genrec llm sft`), but this run "
            f"is model {sft.model.name!r}{'' if (sft_run / 'best.pt').is_file() else ' with no best.pt'}"
        )
    merged = to_dict(sft)
    if config_path is not None:
        given = yaml.safe_load(resolve_config_path(config_path).read_text()) or {}
        extra = sorted(set(given) - {"name", "seed", "rl", "train", "eval"})
        if extra:
            raise ConfigError(
                f"{config_path}: an RL config sets only name, seed, rl, train and eval (the data and "
                f"model come from the SFT run), not {', '.join(extra)}"
            )
        merged.update(given)
    merged.setdefault("rl", {})["sft_run"] = str(sft_run)
    config = from_dict(RunConfig, apply_overrides(merged, overrides))
    changed = config_differences(sft.model, config.model)
    if changed:
        raise ConfigError(f"RL keeps the SFT run's model; these model keys differ: {', '.join(changed)}")
    return config


def training_examples(train: Sequences, model: SIDLLM) -> NextItemExamples:
    """Every (history -> next item) example of the training sequences (each user's latest `train_len` events)."""
    sequences = TrainSequences(train, model.train_len)
    if len(sequences) == 0:
        raise GenrecError("no user has 2 or more training events: nothing to train on")
    return sequences.collate(sequences.users.tolist()).next_item_examples(model.max_len)


def train_grpo(
    config: RunConfig,
    out: Path,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
    stop_after_step: int | None = None,
) -> dict[str, Any] | None:
    """GRPO from the best checkpoint of the SFT run `config.rl.sft_run`; writes a run directory `genrec eval` reads.

    Each evaluation (every `train.eval_every` steps) also writes `last.pt`: weights, optimizer, the
    prompt sampler and the random state. `resume=True` continues the run in `out` from it and reaches
    the same weights as a run that never stopped. stop_after_step: return None after the checkpoint
    of that step (as if the run were interrupted there).
    """
    from genrec.runner import run_inputs

    if resume and not config.rl.sft_run:
        raise GenrecError(
            f"cannot resume {out} as an RL run: its config has no rl.sft_run (resume an SFT run with "
            f"genrec train --resume)"
        )
    if resume and not (out / LAST_CHECKPOINT).is_file():
        raise GenrecError(f"cannot resume: no checkpoint at {out / LAST_CHECKPOINT}")
    if not config.rl.sft_run:
        raise ConfigError("rl.sft_run is not set: RL starts from an SFT run (genrec llm rl --from RUN_DIR)")
    if not resume:
        check_output_not_input(out, run_inputs(config))
    with RunDir.writing(out, config, overwrite, resume) as run_dir:
        log_metrics = RunLog(run_dir, config)  # metrics.jsonl and the trackers of train.log_to
        try:
            return _run_grpo(config, run_dir, log_metrics, Path(config.rl.sft_run), progress, resume, stop_after_step)
        finally:
            log_metrics.close()


def _run_grpo(
    config: RunConfig,
    run_dir: RunDir,
    log_metrics: RunLog,
    sft_run: Path,
    progress: bool,
    resume: bool,
    stop_after_step: int | None,
) -> dict[str, Any] | None:
    """The body of `train_grpo`, in a run directory locked for it."""
    from genrec.runner import build_model, dataset_of_run, record_dataset, scorer_for, split_for

    out = run_dir.path
    dataset = dataset_of_run(RunDir.open(sft_run), config)  # RL reads the SFT run's data
    record_dataset(run_dir, dataset)
    split = split_for(dataset, config)
    model = build_model(dataset, config, progress)
    assert isinstance(model, SIDLLM)
    load_weights(model, sft_run / BEST_CHECKPOINT)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    reward_scorer = None
    if config.rl.reward == "collaborative":
        cf_run = Path(config.rl.collaborative_run or "")
        reward_scorer = scorer_for(dataset, split, RunDir.open(cf_run).config(), cf_run)
    t, e = config.train, config.eval
    everything = training_examples(split.train, model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    steps = t.max_steps or math.ceil(t.epochs * len(everything.targets) / t.batch_size)
    # the trainer's settings, honoured here too: the lr schedule (warmup, cosine), bf16 autocast, patience
    scheduler = build_schedule(optimizer, t, total_steps=steps)
    device = model.item_tokens.device
    use_amp = t.amp == "bf16" or (t.amp == "auto" and device.type == "cuda")
    generator = torch.Generator().manual_seed(config.seed)
    tables = model.level_tables()

    def validate(which: str) -> dict[str, float]:
        model.eval()
        cases = split.cases(which).sample(e.max_cases)
        started = time.perf_counter()
        result = evaluate(
            model.scorer(),
            split.sequences,
            cases,
            model.num_items,
            ks=e.ks,
            batch_size=e.batch_size,
            max_history=model.max_len,
            mask_history=e.mask_history,
            progress=progress,
            desc=f"eval {which}",
        )
        return {**result, "seconds": time.perf_counter() - started}

    if resume:
        saved = load_checkpoint(out / LAST_CHECKPOINT)
        load_state(model, saved["model"], out / LAST_CHECKPOINT)
        load_state(optimizer, saved["optimizer"], out / LAST_CHECKPOINT, "optimizer state")
        generator.set_state(saved["generator"])
        set_rng_state(saved["rng"])
        first, best, best_step = saved["step"] + 1, saved["best"], saved["best_step"]
        stale = int(saved.get("stale", 0))
        if "scheduler" in saved:
            load_state(scheduler, saved["scheduler"], out / LAST_CHECKPOINT, "schedule")
        else:  # a checkpoint from before GRPO had schedules: replay the schedule over its steps
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
                for _ in range(saved["step"]):
                    scheduler.step()
        run_dir.drop_metrics_after(saved["step"])
        run_dir.save_config(config)  # only now that the checkpoint fits: train.max_steps may have been extended
        log.info("resumed %s after step %d", out, saved["step"])
    else:
        first, best, best_step, stale = 1, validate("valid")[t.metric], 0, 0
        log_metrics({"split": "valid", "epoch": 0, "step": 0, t.metric: best})
        save_checkpoint(run_dir.path / BEST_CHECKPOINT, {"model": model.state_dict(), "step": 0})
    stopped_early = False
    bar = tqdm(range(first, steps + 1), desc="grpo", unit="step", disable=not progress, initial=first - 1, total=steps)
    for step in bar:
        adapt_threads()
        rows = torch.randint(len(everything.targets), (t.batch_size,), generator=generator)
        batch = NextItemExamples(*(getattr(everything, f)[rows] for f in ("users", "history", "lengths", "targets")))
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            stats = grpo_step(model, reference, optimizer, batch, config.rl, tables, t.grad_clip, reward_scorer)
        scheduler.step()
        record = {
            "split": "train",
            "epoch": 0,
            "step": step,
            **stats.__dict__,
            "lr": lr,
            "seconds": time.perf_counter() - started,
        }
        log_metrics(record)
        bar.set_postfix(reward=f"{stats.reward:.3f}", hit=f"{stats.hit_rate:.2f}", kl=f"{stats.kl:.4f}")
        if step % t.eval_every == 0 or step == steps:
            valid = validate("valid")
            log_metrics({"split": "valid", "epoch": 0, "step": step, **valid})
            log.info("step %d: reward %.3f, valid %s %.4f", step, stats.reward, t.metric, valid[t.metric])
            if valid[t.metric] > best:
                best, best_step, stale = valid[t.metric], step, 0
                save_checkpoint(run_dir.path / BEST_CHECKPOINT, {"model": model.state_dict(), "step": step})
            else:
                stale += 1
            save_checkpoint(
                run_dir.path / LAST_CHECKPOINT,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "rng": rng_state(),
                    "step": step,
                    "best": best,
                    "best_step": best_step,
                    "stale": stale,
                },
            )
            plot_run(run_dir.path, t.metric, x="step", train_keys=("reward", "hit_rate", "kl"))
            if stop_after_step is not None and step >= stop_after_step:
                return None
            if t.patience is not None and stale >= t.patience:
                log.info("no improvement in %d validations: stopping after step %d", stale, step)
                stopped_early = True
                break
    load_weights(model, run_dir.path / BEST_CHECKPOINT)
    results = {"valid": validate("valid"), "test": validate("test")}
    for which, metrics in results.items():
        log_metrics({"split": which, "step": best_step, "final": True, **metrics})
    summary = {
        "model": "sid-llm",
        "stage": "grpo",
        "from": str(sft_run),
        "dataset": str(dataset.path),
        "protocol": split.protocol,
        **results,
        "best_step": best_step,
        "steps": steps,
        "stopped_early": stopped_early,
    }
    run_dir.write_metrics(summary)
    return summary
