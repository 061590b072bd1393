"""Training and evaluating a ranker run (`model.name: ranker`), on the shared trainer.

The trainer selects the checkpoint on `model.select`: by default the first binary head's validation
GAUC (the ranker metrics of `genrec.eval.ranker_eval`, computed at each validation), or with
`model.select: backbone` the backbone's next-item `train.metric` (what the auxiliary loss trains; the
DLRM-style baseline ranks the catalogue by its first head). The ranking metrics of each task are
computed on the best weights, on validation and test, and stored under "ranking" in metrics.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genrec.checkpoints import BEST_CHECKPOINT, LAST_CHECKPOINT, load_weights
from genrec.config import RunConfig, to_dict
from genrec.data.dataset import Dataset
from genrec.data.splits import Split
from genrec.errors import ConfigError
from genrec.eval.evaluator import EvalBatch
from genrec.eval.ranker_eval import evaluate_ranker
from genrec.eval.two_stage import evaluate_two_stage
from genrec.models.ranking import Impressions, Ranker
from genrec.models.ranking_config import RankingConfig
from genrec.run_dir import RunDir
from genrec.train.distributed import DistContext
from genrec.train.ranking_objective import EventLabels, RankingObjective, task_labels
from genrec.train.trainer import Trainer


def event_labels(dataset: Dataset, config: RankingConfig) -> EventLabels:
    """The labels of every event of `dataset` for the ranker's tasks."""
    if not dataset.manifest.get("has_rating") and any(t.column == "rating" for t in config.tasks):
        raise ConfigError(
            f"the dataset at {dataset.path} has no ratings, but model.tasks read them: "
            f"declare tasks on the columns it has"
        )
    return EventLabels(dataset.sequences, task_labels(config.tasks, dataset.interactions), dataset.num_items)


def ranker_metrics(ranker: Ranker, labels: EventLabels, split: Split, which: str, seed: int) -> dict[str, float]:
    """The per-task metrics of `ranker` on the `which` cases of `split`."""
    ranker.eval()

    def logits(batch: EvalBatch, candidates: torch.Tensor) -> torch.Tensor:
        return ranker(Impressions.of(batch, candidates, ranker.device))

    tasks = [(t.name, t.kind) for t in ranker.config.tasks]
    negatives = max(ranker.config.negatives, 1)
    cases = split.cases(which)
    return evaluate_ranker(
        logits, tasks, labels, split.sequences, cases, ranker.num_items, ranker.max_len, negatives, seed
    )


def fit_ranker(
    model: Ranker,
    dataset: Dataset,
    split: Split,
    config: RunConfig,
    run_dir: RunDir,
    context: DistContext,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Train `model` (a fresh ranker), then measure it; returns the trainer's metrics plus "ranking"."""
    assert isinstance(config.model, RankingConfig)
    labels = event_labels(dataset, config.model)
    device = next(model.parameters()).device
    objective = RankingObjective(
        model,
        split.train,
        config.train,
        config.seed,
        context,
        device,
        labels,
        config.model.examples_per_window,
        valid_metrics=lambda: ranker_metrics(model, labels, split, "valid", config.seed),
    )
    model.start_regression_at(labels.mean_of(split.train))  # a resumed run loads its own weights after
    trainer = Trainer(model, split, config, run_dir, context, progress=progress, objective=objective)
    if resume:
        trainer.resume(run_dir.path / LAST_CHECKPOINT)
    metrics = trainer.fit()
    ranking = {which: ranker_metrics(model, labels, split, which, config.seed) for which in ("valid", "test")}
    return {**metrics, "ranking": ranking}


def load_ranker(dataset: Dataset, config: RunConfig, run_dir: Path) -> Ranker:
    """The best checkpoint of the ranker run `run_dir`, in eval mode."""
    from genrec.runner import build_model

    if not (run_dir / BEST_CHECKPOINT).is_file():
        raise ConfigError(f"{run_dir} has no {BEST_CHECKPOINT}: it is no finished ranker run")
    model = build_model(dataset, config, progress=False)
    if not isinstance(model, Ranker):
        raise ConfigError(f"{run_dir} is a {config.model.name} run, not a ranker run (model.name: ranker)")
    load_weights(model, run_dir / BEST_CHECKPOINT)
    return model.eval()


def evaluate_ranker_run(run_dir: Path, which: str = "test") -> dict[str, float]:
    """The per-task metrics of the ranker run `run_dir` on its `which` cases."""
    from genrec.runner import dataset_of_run, split_for

    config = RunDir.open(run_dir).config()
    dataset = dataset_of_run(RunDir.open(run_dir), config)
    split = split_for(dataset, config)
    ranker = load_ranker(dataset, config, run_dir)
    return ranker_metrics(ranker, event_labels(dataset, ranker.config), split, which, config.seed)


def two_stage(
    retrieval_run: Path,
    ranker_run: Path,
    k: int = 10,
    candidates: int = 200,
    weights: dict[str, float] | None = None,
    which: str = "test",
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """{"retrieval": the retrieval run alone, "two-stage": its top `candidates` reranked by the ranker's
    combined heads (`weights`: task name -> weight; default the first head)} on the `which` cases.

    The weight of the name "retrieval" (`RETRIEVAL`) blends in the retrieval scores (see
    `genrec.eval.two_stage`): {"event": 1, "retrieval": 0.5} ranks by z(event) + 0.5 z(retrieval).
    """
    from genrec.runner import dataset_of_run, evaluate_split, scorer_for, split_for

    config = RunDir.open(retrieval_run).config()
    ranker_config = RunDir.open(ranker_run).config()
    if to_dict(config.data) != to_dict(ranker_config.data) or to_dict(config.split) != to_dict(ranker_config.split):
        raise ConfigError(f"{retrieval_run} and {ranker_run} read other data or splits: rank runs of the same data")
    config.eval.ks = [k]
    dataset = dataset_of_run(RunDir.open(retrieval_run), config)
    split = split_for(dataset, config)
    retrieval = scorer_for(dataset, split, config, retrieval_run)
    ranker = load_ranker(dataset, ranker_config, ranker_run)
    weights, retrieval_weight = split_retrieval_weight(weights, ranker)

    def rerank(batch: EvalBatch, top: torch.Tensor) -> torch.Tensor:
        logits = ranker(Impressions.of(batch, top, ranker.device))
        return ranker.combined(logits, weights)

    alone = evaluate_split(retrieval, dataset, split, which, config, progress)
    cases = split.cases(which).sample(config.eval.max_cases)
    reranked = evaluate_two_stage(
        retrieval,
        rerank,
        split.sequences,
        cases,
        dataset.num_items,
        candidates,
        [k],
        batch_size=64,
        mask_history=config.eval.mask_history,
        progress=progress,
        retrieval_weight=retrieval_weight,
    )
    return {"retrieval": alone, "two-stage": reranked}


RETRIEVAL = "retrieval"  # in rerank weights: the weight of the retrieval stage's own (standardised) score


def split_retrieval_weight(weights: dict[str, float] | None, ranker: Ranker) -> tuple[dict[str, float] | None, float]:
    """(the heads' weights, the retrieval score's weight) of rerank `weights`; a clear error for an
    unknown head. Only "retrieval" given: the ranker's first head with weight 1 beside it."""
    if not weights:
        return weights, 0.0
    heads = {name: w for name, w in weights.items() if name != RETRIEVAL}
    for name in heads:
        ranker.config.task(name)
    return heads or None, float(weights.get(RETRIEVAL, 0.0))
