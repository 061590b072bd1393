"""The config of the rankers (`genrec.models.ranking`); torch-free, as every model config.

A ranker scores (user history, candidate item) pairs with one head per task: `binary` heads give
logits of an action (BCE), `regression` heads a value (MSE). Labels come from the dataset's events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from genrec.errors import ConfigError
from genrec.models.base_config import ModelConfig
from genrec.models.hstu_config import HSTUConfig

# early: the candidate is the sequence's last token; late: user vector + candidate vector -> MLP;
# none: the non-sequential baseline, user and item embeddings -> MLP (DLRM-style)
Fusion = Literal["early", "late", "none"]
TaskKind = Literal["binary", "regression"]
# where a binary head's negatives come from: uniform over the catalogue; popularity: in proportion to
# the items' training events; hard: among the backbone's own top `hard_pool` items for the history
NegativeSampler = Literal["uniform", "popularity", "hard"]
EVENT_LABEL = "event"
BACKBONE = "backbone"  # model.select: the backbone's next-item train.metric


@dataclass
class TaskConfig:
    """One head. label: "rating" (the event's rating), "rating>=X" (1 when the rating is at least X) or
    "event" (1 for every real event: the head learns "was this impression real", the next-item question
    a reranker of retrieved candidates asks; binary heads only)."""

    name: str
    kind: TaskKind = "binary"
    label: str = "rating>=4"
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in get_args(TaskKind):
            raise ConfigError(
                f"model.tasks[{self.name}].kind: unknown kind {self.kind!r}; valid: {', '.join(get_args(TaskKind))}"
            )
        if self.weight < 0:
            raise ConfigError(f"model.tasks[{self.name}].weight must be >= 0, got {self.weight}")
        self.threshold  # noqa: B018 (parses the label)
        if self.kind == "regression" and (self.threshold is not None or self.is_event):
            raise ConfigError(f"model.tasks[{self.name}]: a regression head reads a value label, got {self.label!r}")

    @property
    def is_event(self) -> bool:
        """True for the label "event": every real impression is 1, every sampled negative 0."""
        return self.label.strip() == EVENT_LABEL

    @property
    def column(self) -> str:
        """The interactions column the label is read from."""
        return self.label.split(">=")[0].strip()

    @property
    def threshold(self) -> float | None:
        """X of a "column>=X" label (None for a plain column)."""
        if ">=" not in self.label:
            return None
        try:
            return float(self.label.split(">=")[1])
        except ValueError:
            raise ConfigError(
                f"model.tasks[{self.name}].label: expected 'column>=number', got {self.label!r}"
            ) from None


def default_tasks() -> list[TaskConfig]:
    """MovieLens's: like = rating >= 4 (binary), rating (regression)."""
    return [TaskConfig("like", "binary", "rating>=4"), TaskConfig("rating", "regression", "rating", 0.1)]


def small_hstu() -> ModelConfig:
    """The default backbone: a small HSTU."""
    return HSTUConfig(max_len=50, dim=32, attention_dim=32, value_dim=32, dropout=0.2)


@dataclass
class RankingConfig(ModelConfig):
    name: str = "ranker"
    fusion: Fusion = "late"
    backbone: ModelConfig = field(default_factory=small_hstu)  # a sasrec or hstu section; unused by fusion=none
    tasks: list[TaskConfig] = field(default_factory=default_tasks)
    negatives: int = 4  # sampled non-interacted items per positive, labelled 0 for the binary heads
    negative_sampler: NegativeSampler = "uniform"
    hard_pool: int = 200  # negative_sampler=hard: negatives are drawn from the backbone's top this many
    # the validation metric that chooses the checkpoint: "<binary head>/gauc" or "<binary head>/auc" (the
    # ranker metrics on validation), or "backbone" (the backbone's next-item train.metric);
    # default (None): the first binary head's GAUC, or the backbone's metric without a binary head
    select: str | None = None
    aux_weight: float = 0.1  # weight of the backbone's next-item loss
    dim: int = 32  # embedding width of the fusion=none baseline
    train_len: int = 50  # events per training window of the fusion=none baseline (the others: backbone.max_len)
    examples_per_window: int = 8  # the latest targets of each training window that are impressions
    hidden: int = 64  # width of the heads' MLP

    def __post_init__(self) -> None:
        self.tasks = [t if isinstance(t, TaskConfig) else TaskConfig(**t) for t in self.tasks]
        if self.fusion not in get_args(Fusion):
            raise ConfigError(f"model.fusion: unknown fusion {self.fusion!r}; valid: {', '.join(get_args(Fusion))}")
        if not self.tasks:
            raise ConfigError("model.tasks is empty: declare at least one head")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"model.tasks: two heads share a name ({', '.join(names)})")
        if self.negatives < 0 or self.aux_weight < 0:
            raise ConfigError(
                f"model.negatives and model.aux_weight must be >= 0, got {self.negatives}, {self.aux_weight}"
            )
        if self.backbone.name not in ("sasrec", "hstu"):
            raise ConfigError(f"model.backbone.name: expected sasrec or hstu, got {self.backbone.name!r}")
        if self.fusion == "early" and getattr(self.backbone, "max_len", 0) < 2:
            raise ConfigError("model.backbone.max_len must be >= 2 for early fusion (history + the candidate)")
        if self.examples_per_window < 1 or self.train_len < 2:
            raise ConfigError("model.examples_per_window must be >= 1 and model.train_len >= 2")
        if self.negative_sampler not in get_args(NegativeSampler):
            raise ConfigError(
                f"model.negative_sampler: unknown sampler {self.negative_sampler!r}; "
                f"valid: {', '.join(get_args(NegativeSampler))}"
            )
        if self.negative_sampler == "hard" and (self.fusion == "none" or self.hard_pool < 1):
            raise ConfigError(
                "model.negative_sampler=hard draws from the backbone's top model.hard_pool (>= 1) items: "
                "it needs fusion early or late"
            )
        self.selection_metric  # noqa: B018 (checks model.select)

    @property
    def fits_features(self) -> bool:
        """The backbone's side features (fusion early or late) are fitted on the training events."""
        return self.fusion != "none" and self.backbone.fits_features

    @property
    def selection_metric(self) -> str | None:
        """The ranker metric that chooses the checkpoint ("like/gauc"), or None for the backbone's."""
        binary = [t.name for t in self.tasks if t.kind == "binary"]
        if self.select is None:
            return f"{binary[0]}/gauc" if binary else None
        if self.select == BACKBONE:
            return None
        head, _, metric = self.select.partition("/")
        if head not in binary or metric not in ("gauc", "auc"):
            choices = [f"{b}/{m}" for b in binary for m in ("gauc", "auc")] + [BACKBONE]
            raise ConfigError(f"model.select: {self.select!r} is no choice; valid: {', '.join(choices)}")
        return self.select

    @property
    def uses_time(self) -> bool:
        return self.fusion != "none" and self.backbone.uses_time

    def task(self, name: str) -> TaskConfig:
        for task in self.tasks:
            if task.name == name:
                return task
        raise ConfigError(f"no head named {name!r}; the ranker has {', '.join(t.name for t in self.tasks)}")
