"""Typed run configs: dataclasses, loaded from YAML, with `--set a.b=c` overrides.

Every key is checked when the config is built: an unknown key or a value of the wrong type is an
error that names the key and what is allowed. The resolved config is saved in each run directory.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from genrec.errors import ConfigError
from genrec.models.base_config import GenerativeConfig, ModelConfig
from genrec.models.hllm_config import HLLMConfig
from genrec.models.popularity_config import PopularityConfig
from genrec.models.registry import MODEL_NAMES, model_config_class

T = TypeVar("T")


@dataclass
class DataConfig:
    """Which dataset to use. Either `path` (a prepared dataset) or `source` (+ `raw`, filters)."""

    source: str = "ml-100k"  # a `genrec data prepare` SOURCE name
    raw: str | None = None  # local copy of the raw release ($VARS expanded); default: $GENREC_DATA_DIR, cache, download
    path: str | None = None  # a prepared canonical dataset folder (overrides source/raw)
    min_rating: float | None = None
    dedup: bool = False
    user_core: int = 0
    item_core: int = 0
    core_once: bool = False  # one counting pass instead of the iterated k-core (generative-recommenders' Amazon)
    options: dict[str, Any] = field(default_factory=dict)  # source options (column names of the csv source)

    def __post_init__(self) -> None:
        from genrec.data.sources import SOURCES  # late: sources import pyarrow

        if self.path is None and self.source not in SOURCES:
            raise ConfigError(f"data.source: unknown source {self.source!r}; valid sources: {', '.join(SOURCES)}")


@dataclass
class SplitConfig:
    """The evaluation protocol (see `genrec.data.splits`)."""

    # auto = the dataset's own split when it comes with one (MiniOneRec, UniSRec), else leave-one-out
    # new-items = the time split with only the targets no training event has (cold-start items)
    protocol: Literal["auto", "leave-one-out", "time", "user", "predefined", "new-items"] = "auto"
    valid_fraction: float = 0.1  # time / new-items split (when no cut times are given) and user split
    test_fraction: float = 0.1
    valid_time: int | None = None  # time / new-items split cut points, unix seconds
    test_time: int | None = None
    time_targets: Literal["first", "all"] = "first"
    seed: int = 0  # user split


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 50, 200])
    batch_size: int | None = None  # default: as many users as fit a 64 MiB score matrix
    mask_history: bool = True
    # evaluate a fixed random sample of this many cases (the same for every evaluation of a run):
    # for models whose ranking is expensive (an LLM's beam search on CPU); num_users reports the count
    max_cases: int | None = None

    def __post_init__(self) -> None:
        if self.max_cases is not None and self.max_cases < 1:
            raise ConfigError(f"eval.max_cases must be >= 1 or null, got {self.max_cases}")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"eval.ks: cutoffs must be positive integers, got {self.ks}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class LossConfig:
    """The training loss (see `genrec.train.losses`)."""

    # full softmax | uniform negatives | in-batch negatives with logQ |
    # infonce = HLLM's: in-batch negatives plus a shared pool of num_negatives uniform items
    name: Literal["full", "sampled", "in-batch", "infonce"] = "sampled"
    num_negatives: int = 128
    # logits = scores / temperature. Default: 0.05 when the model's vectors are L2-normalised
    # (HSTU; SASRec with l2_norm), 1.0 for raw dot products
    temperature: float | None = None
    learn_temperature: bool = False  # infonce: learn the temperature (clamped to >= 0.01), as HLLM
    false_negative_threshold: float | None = None  # infonce: mask negatives this similar (cosine) to the positive

    @property
    def uses_whole_batch(self) -> bool:
        """True when the negatives come from the rest of the batch (so it cannot be micro-batched)."""
        return self.name in ("in-batch", "infonce")

    def __post_init__(self) -> None:
        if self.learn_temperature and self.name != "infonce":
            raise ConfigError(f"train.loss.learn_temperature is only supported by the infonce loss, not {self.name!r}")
        if self.false_negative_threshold is not None and self.name != "infonce":
            raise ConfigError("train.loss.false_negative_threshold is only supported by the infonce loss")
        if self.num_negatives < 1 or (self.temperature is not None and self.temperature <= 0):
            raise ConfigError(
                f"train.loss: num_negatives must be >= 1 and temperature > 0, got "
                f"{self.num_negatives} and {self.temperature}"
            )


@dataclass
class TrainConfig:
    """Optimisation, schedule, evaluation cadence and early stopping (see `genrec.train.trainer`)."""

    epochs: int = 100
    max_steps: int | None = None  # stop after this many optimizer steps (then validate and test), e.g. a CPU budget
    batch_size: int = 128  # global batch: split across processes under torchrun
    # rows per forward/backward pass inside a batch; gradients accumulate, so the step is the same.
    # 0 = auto: 16 on CPU (a working set that fits the cache is several times faster, and rows sorted
    # by length make short passes carry little padding), the whole batch on GPU, with in-batch
    # negatives (whose negatives are the rest of the batch) and for a model that skips padding
    # (HSTU's packed tokens on CPU)
    micro_batch_size: int = 0
    # training windows per user: "latest" = one, the latest max_len + 1 events (generative-recommenders);
    # "all" = the whole sequence cut into windows, so the targets of long histories are all trained on
    windows: Literal["latest", "all"] = "latest"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"  # cosine decays to 0 after the warmup
    warmup_steps: int = 0
    warmup_fraction: float | None = None  # warmup as a fraction of all steps (HLLM: 0.1); overrides warmup_steps
    grad_clip: float | None = None  # max global gradient norm
    eval_every: int = 1  # epochs between validation passes
    # optimizer steps between validation passes (each also writes last.pt); when set, replaces eval_every
    eval_every_steps: int | None = None
    patience: int | None = 10  # stop after this many validations without improvement (None: never)
    metric: str = "ndcg@10"  # validation metric for early stopping and the best checkpoint
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    device: str = "auto"  # auto = cuda when available
    loss: LossConfig = field(default_factory=LossConfig)
    tensorboard: bool = False  # the same as "tensorboard" in log_to
    # experiment trackers that get a copy of the metrics (genrec.train.trackers): tensorboard, mlflow, wandb
    log_to: list[Literal["tensorboard", "mlflow", "wandb"]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "eval_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if self.micro_batch_size < 0:
            raise ConfigError(f"train.micro_batch_size must be >= 0 (0 = auto), got {self.micro_batch_size}")
        if self.loss.uses_whole_batch and 0 < self.micro_batch_size < self.batch_size:
            raise ConfigError(
                f"train.micro_batch_size: {self.loss.name} negatives come from the whole batch, so it cannot be "
                "split into micro-batches; set train.micro_batch_size=0"
            )
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0 or (self.grad_clip is not None and self.grad_clip <= 0):
            raise ConfigError(
                f"train.weight_decay must be >= 0 and train.grad_clip > 0 or null, got "
                f"{self.weight_decay} and {self.grad_clip}"
            )
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps must be >= 1 or null, got {self.max_steps}")
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"train.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"train.patience must be >= 1 or null, got {self.patience}")
        if self.eval_every_steps is not None and self.eval_every_steps < 1:
            raise ConfigError(f"train.eval_every_steps must be >= 1 or null, got {self.eval_every_steps}")


@dataclass
class RLConfig:
    """GRPO after SFT (`genrec llm rl`; see `genrec.llm.grpo`). The rest comes from `train`, as for
    every objective: lr, schedule and warmup, grad_clip, amp, epochs (an epoch offers every training
    example once on average) or max_steps, eval_every or eval_every_steps, patience."""

    prompts_per_step: int = 16  # training histories per optimizer step (train.batch_size is for SFT)
    num_generations: int = 16  # candidates per prompt, from the constrained beam search
    beta: float = 0.001  # weight of the KL penalty to the SFT model (MiniOneRec: 1e-3)
    reward: Literal["rule", "ranking", "collaborative"] = "ranking"
    collaborative_run: str | None = None  # reward=collaborative: a trained genrec sequential run directory
    sft_run: str | None = None  # the SFT run directory RL starts from (`genrec llm rl --from` sets it)

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ConfigError(
                f"rl.num_generations must be >= 2 (advantages compare candidates), got {self.num_generations}"
            )
        if self.beta < 0:
            raise ConfigError(f"rl.beta must be >= 0, got {self.beta}")
        if self.prompts_per_step < 1:
            raise ConfigError(f"rl.prompts_per_step must be >= 1, got {self.prompts_per_step}")
        if self.reward == "collaborative" and not self.collaborative_run:
            raise ConfigError("rl.reward=collaborative needs rl.collaborative_run: a trained SASRec run directory")


@dataclass
class RunConfig:
    """A whole run: data, protocol, model and evaluation. The defaults: popularity on MovieLens-100K."""

    name: str = "quickstart"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=PopularityConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rl: RLConfig = field(default_factory=RLConfig)

    def __post_init__(self) -> None:
        # the name becomes a folder under runs/ (default_run_dir): a path here could write anywhere
        if (
            not self.name
            or self.name in (".", "..")
            or any(c in self.name for c in "/\\\0")
            or self.name.startswith("~")
        ):
            raise ConfigError(
                f"name: {self.name!r} is not a plain run name (no path separators, '.', '..' or '~'); "
                f"it names the run folder under runs/, and --out chooses another folder"
            )
        beams = self.model.num_beams if isinstance(self.model, GenerativeConfig) else None
        if beams is not None and max(self.eval.ks) > beams:
            raise ConfigError(
                f"eval.ks goes up to {max(self.eval.ks)} but model.num_beams is {beams}: a generated "
                f"ranking has only {beams} items; lower eval.ks or raise model.num_beams"
            )

    def check_trainable(self) -> None:
        """Checks that only matter when a model is trained (not when one is just evaluated)."""
        names = [f"{m}@{k}" for k in self.eval.ks for m in ("hr", "ndcg")] + ["mrr"]
        if self.train.metric not in names:
            raise ConfigError(
                f"train.metric: {self.train.metric!r} is not computed; with eval.ks={self.eval.ks} "
                f"the metrics are {', '.join(names)}"
            )
        if self.model.end_to_end and self.train.loss.name != "infonce":
            assert isinstance(self.model, HLLMConfig)  # the one model whose item encoder trains end to end
            raise ConfigError(
                f"model.item_llm.train={self.model.item_llm.train} runs the item LLM on each batch's items "
                f"only, which the {self.train.loss.name!r} loss cannot do (it scores the whole catalogue): "
                f"set train.loss.name=infonce"
            )


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking every key and value type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(
            f"unknown config key {key!r}; valid keys{' of ' + where if where else ''}: {', '.join(names)}"
        )
    data = {k: _with_model_defaults(cls, k, v) if hints[k] is ModelConfig else v for k, v in data.items()}
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _with_model_defaults(cls: type, key: str, value: Any) -> Any:
    """A nested model section (HLLM's `user`) starts from its field's default model, so `--set
    model.user.dim=32` changes one key of the default user model instead of replacing it."""
    default_factory = next(f.default_factory for f in dataclasses.fields(cls) if f.name == key)
    if not isinstance(value, dict) or default_factory is dataclasses.MISSING:
        return value
    default = default_factory()
    if value.get("name", default.name) != default.name:
        return value
    return {**to_dict(default), **value}


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner,) = get_args(tp) or (Any,)
        return [_convert(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is ModelConfig:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping with a name, got {value!r}")
        name = value.get("name", "popularity")
        if name not in MODEL_NAMES:
            raise ConfigError(f"{key}.name: unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
        return from_dict(model_config_class(name), value, key)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp}")


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set data.source=ml-1m")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
    return data


RECIPES = Path(__file__).resolve().parent / "configs"  # the shipped recipes (the repository's configs/)


def recipe_names() -> list[str]:
    """The shipped recipes, as names for `load_config`: "ml-1m/hstu", "ml-100k/sasrec", ..."""
    return sorted(str(p.relative_to(RECIPES).with_suffix("")) for p in RECIPES.rglob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """A YAML file path, or the name of a shipped recipe ("ml-1m/hstu")."""
    path = Path(path)
    if path.is_file():
        return path
    # not with_suffix: a recipe name may hold dots ("office/llm-qwen2.5-1.5b-sft")
    recipe = RECIPES / (str(path) if path.name.endswith(".yaml") else f"{path}.yaml")
    if recipe.is_file():
        return recipe
    raise ConfigError(
        f"config file not found: {path} (nor a shipped recipe of that name; recipes: {', '.join(recipe_names())})"
    )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """A `RunConfig` from a YAML file or recipe name (None = defaults) plus `--set` overrides."""
    data: dict = {}
    if path is not None:
        path = resolve_config_path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
            raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    apply_overrides(data, overrides or [])
    return from_dict(RunConfig, data)


def config_differences(a: Any, b: Any) -> list[str]:
    """Dotted keys whose values differ between two configs."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in d.items():
            name = f"{prefix}{key}"
            out.update(flat(value, name + ".") if isinstance(value, dict) else {name: value})
        return out

    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
