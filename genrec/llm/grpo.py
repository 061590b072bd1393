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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from genrec.config import RLConfig, RunConfig, config_differences, from_dict, to_dict
from genrec.data.batching import NextItemExamples, TrainSequences
from genrec.data.dataset import Sequences
from genrec.errors import ConfigError, GenrecError
from genrec.eval.evaluator import EvalBatch, Scorer
from genrec.items.trie import LevelTables
from genrec.llm.sid_llm import SIDLLM
from genrec.run_dir import RunDir
from genrec.train.objectives import Objective, StepContext, StepResult

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


def grpo_loss(
    model: SIDLLM,
    reference: SIDLLM,
    examples: NextItemExamples,
    rl: RLConfig,
    tables: LevelTables,
    reward_scorer: Scorer | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Generate candidates for a batch of (history -> target) examples, reward them, and return the
    GRPO loss (a scalar with gradients) and the step's numbers: the mean reward of the valid
    candidates, the hit rate (prompts whose target is among the candidates) and the KL to `reference`."""
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
        if reward_scorer is None:
            raise ValueError("rl.reward=collaborative needs a reward_scorer")
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
    logp = candidate_logprobs(model, ids, mask, beams.tokens)  # [P, G, L]
    with torch.no_grad():
        ref_logp = candidate_logprobs(reference, ids, mask, beams.tokens)
    delta = ref_logp - logp
    kl = delta.exp() - delta - 1  # k3: unbiased, >= 0
    per_token = -advantages[..., None] * (logp - logp.detach()).exp() + rl.beta * kl
    weight = valid[..., None].expand_as(per_token).float()
    loss = (per_token * weight).sum() / weight.sum().clamp(min=1)
    stats = {
        "loss": float(loss.detach()),
        "reward": float((rewards * valid).sum() / valid.sum().clamp(min=1)),
        "hit_rate": float(hits.any(dim=1).float().mean()),
        "kl": float((kl.detach() * weight).sum() / weight.sum().clamp(min=1)),
    }
    return loss, stats


def training_examples(train: Sequences, model: SIDLLM) -> NextItemExamples:
    """Every (history -> next item) example of the training sequences (each user's latest `train_len` events)."""
    sequences = TrainSequences(train, model.train_len)
    if len(sequences) == 0:
        raise GenrecError("no user has 2 or more training events: nothing to train on")
    return sequences.collate(sequences.users.tolist()).next_item_examples(model.max_len)


class GRPOObjective(Objective):
    """GRPO as an objective of the shared trainer: each step samples `rl.prompts_per_step` training
    examples (with replacement, from a generator seeded by the run's seed and saved in checkpoints)
    and takes the policy-gradient step of `grpo_loss` against a frozen copy of the starting model.

    An epoch is as many steps as offer every training example once on average. The starting (SFT)
    weights are validated first, so the best checkpoint is RL's only when RL improved on them.
    """

    train_keys = ("reward", "hit_rate", "kl")
    log_every_step = True
    validate_at_start = True
    supports_ddp = False  # the beam search runs in one process

    def __init__(
        self, model: SIDLLM, train: Sequences, rl: RLConfig, seed: int, reward_scorer: Scorer | None = None
    ) -> None:
        if rl.reward == "collaborative" and reward_scorer is None:
            raise ConfigError("rl.reward=collaborative needs the scorer of rl.collaborative_run")
        self.model = model
        self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.examples = training_examples(train, model)
        self.rl = rl
        self.tables = model.level_tables()
        self.reward_scorer = reward_scorer
        self.generator = torch.Generator().manual_seed(seed)

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.examples.targets) / self.rl.prompts_per_step)

    def batches(self, epoch: int, skip: int = 0) -> Iterator[NextItemExamples]:
        # the sampler's state is checkpointed, so a resumed epoch just draws its remaining steps
        for _ in range(self.steps_per_epoch() - skip):
            rows = torch.randint(len(self.examples.targets), (self.rl.prompts_per_step,), generator=self.generator)
            yield NextItemExamples(
                *(getattr(self.examples, f)[rows] for f in ("users", "history", "lengths", "targets"))
            )

    def backward(self, batch: NextItemExamples, step: StepContext) -> StepResult:
        with step.autocast():
            loss, stats = grpo_loss(self.model, self.reference, batch, self.rl, self.tables, self.reward_scorer)
        loss.backward()
        return StepResult(loss.detach(), weight=1.0, rows=len(batch.targets), stats=stats)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


# ---- the RL run ---------------------------------------------------------------------------------------
# train keys of next-item training that GRPO has no use for, and what to set instead
NOT_FOR_RL = {
    "batch_size": "rl.prompts_per_step (training histories per step)",
    "micro_batch_size": "nothing: a GRPO step is one batch of prompts",
    "windows": "nothing: GRPO samples from every training example",
    "loss": "rl.reward and rl.beta",
}


def rl_config(config_path: str | Path | None, overrides: list[str], sft_run: Path) -> RunConfig:
    """The SFT run's data, split, model and eval sections, with the sections the RL file gives (any of
    name, seed, rl, train, eval) and the overrides on top. The model section stays the SFT run's; the
    train section is the RL file's alone (SFT's batch size and epochs mean nothing to GRPO)."""
    import yaml

    from genrec.config import apply_overrides, resolve_config_path

    sft = RunDir.open(sft_run).config()
    if sft.model.name != "sid-llm" or not (sft_run / "best.pt").is_file():
        raise ConfigError(
            f"--from {sft_run}: RL starts from a trained sid-llm run (`genrec llm sft`), but this run "
            f"is model {sft.model.name!r}{'' if (sft_run / 'best.pt').is_file() else ' with no best.pt'}"
        )
    merged = {**to_dict(sft), "train": {}, "rl": {}}
    if config_path is not None:
        given = yaml.safe_load(resolve_config_path(config_path).read_text()) or {}
        extra = sorted(set(given) - {"name", "seed", "rl", "train", "eval"})
        if extra:
            raise ConfigError(
                f"{config_path}: an RL config sets only name, seed, rl, train and eval (the data and "
                f"model come from the SFT run), not {', '.join(extra)}"
            )
        merged.update(given)
    merged = apply_overrides(merged, overrides)
    if not isinstance(merged.get("rl"), dict) or not isinstance(merged.get("train"), dict):
        raise ConfigError("an RL config's rl and train sections are mappings of keys")
    merged["rl"]["sft_run"] = str(sft_run)
    unused = [k for k in merged["train"] if k in NOT_FOR_RL]
    if unused:
        raise ConfigError("; ".join(f"train.{k} is not used by GRPO (set {NOT_FOR_RL[k]})" for k in unused))
    config = from_dict(RunConfig, merged)
    changed = config_differences(sft.model, config.model)
    if changed:
        raise ConfigError(f"RL keeps the SFT run's model; these model keys differ: {', '.join(changed)}")
    return config
