"""Glue from a `RunConfig` to results: dataset -> split -> model -> evaluation -> run directory.

The CLI calls these functions and nothing else, so everything it does is also a library call.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genrec.checkpoints import BEST_CHECKPOINT, LAST_CHECKPOINT, load_weights
from genrec.config import DataConfig, RunConfig, to_dict
from genrec.data.dataset import FORMAT_VERSION, MANIFEST, Dataset
from genrec.data.filters import Filters
from genrec.data.prepare import prepare_dataset
from genrec.data.raw import cache_dir
from genrec.data.sources import get_source
from genrec.data.splits import Split, make_split
from genrec.errors import ConfigError
from genrec.eval.evaluator import Scorer, evaluate
from genrec.io import check_output_not_input, exclusive_lock, sha256_file
from genrec.models.base import Recommender
from genrec.models.popularity import Popularity
from genrec.models.registry import model_builder
from genrec.run_dir import RunDir
from genrec.train.distributed import init_distributed, shutdown_distributed
from genrec.train.trainer import Trainer, resolve_device

log = logging.getLogger("genrec")


def _fit_popularity(dataset: Dataset, split: Split, config: RunConfig) -> Scorer:
    return Popularity(dataset.num_items).fit(split.train)


def build_model(dataset: Dataset, config: RunConfig, progress: bool = True) -> Recommender:
    """A fresh sequential model for `dataset`, after checking the config fits the data."""
    model_config = config.model
    if model_config.uses_time and not dataset.has_timestamps:
        key = "model.user.time_buckets" if model_config.name == "hllm" else "model.time_buckets"
        raise ConfigError(
            f"the dataset at {dataset.path} has no timestamps, but model {model_config.name!r} uses a "
            f"time bias: set {key}=0 (position bias only)"
        )
    builder = model_builder(model_config.name)
    if model_config.fits_features:
        # the features' vocabularies come from the training events only (the same split every time
        # the model is rebuilt: for evaluation, serving, export)
        builder = functools.partial(builder, train=split_for(dataset, config).train)
    torch.manual_seed(config.seed)
    device = resolve_device(config.train.device)
    model = builder(dataset, model_config, device, progress)
    # on train.device for every caller (the trainer, GRPO, eval, serving): not every builder places it
    return model.to(device)


def _load_trained(dataset: Dataset, split: Split, config: RunConfig, run_dir: Path | None = None) -> Scorer:
    """The best checkpoint of a finished run, as a scorer."""
    if run_dir is None:
        raise ConfigError(
            f"model {config.model.name!r} has to be trained first: evaluate its run directory (genrec eval RUN_DIR)"
        )
    if not run_dir.is_dir():
        raise ConfigError(f"no run directory at {run_dir}")
    if not (run_dir / BEST_CHECKPOINT).is_file():
        raise ConfigError(
            f"{run_dir} has no {BEST_CHECKPOINT} yet: its training has not finished a validation "
            f"(continue it with genrec train --resume {run_dir})"
        )
    model = build_model(dataset, config)
    load_weights(model, run_dir / BEST_CHECKPOINT)
    return model.eval().scorer()


def filters_of(data: DataConfig) -> Filters:
    return Filters(
        min_rating=data.min_rating,
        dedup=data.dedup,
        user_core=data.user_core,
        item_core=data.item_core,
        core_once=data.core_once,
    )


def dataset_for(data: DataConfig, download: bool = True) -> Dataset:
    """The prepared dataset a config names: `data.path`, or one prepared once into the cache."""
    if data.path is not None:
        return Dataset.load(data.path)
    source = get_source(data.source, **data.options)
    raw = None if data.raw is None else os.path.expandvars(data.raw)  # recipes may say $GENREC_DATA_DIR/...
    if raw is not None and "$" in raw:
        raise ConfigError(f"data.raw: {data.raw!r} names an environment variable that is not set")
    raw_path = source.locate(raw, download).resolve()
    filters = filters_of(data)
    # the format version is part of the key: a cache prepared by an older genrec lacks what this one writes
    key_text = json.dumps(
        [data.source, source.options(), filters.to_dict(), str(raw_path), FORMAT_VERSION], sort_keys=True
    )
    key = hashlib.sha1(key_text.encode()).hexdigest()[:10]
    folder = cache_dir() / "datasets" / f"{data.source}-{key}"
    # runs started together (a seed sweep) prepare the cached dataset once: the others wait for it
    with exclusive_lock(folder.parent / f".{folder.name}.prepare.lock", f"the cached dataset {folder}", wait=True):
        if (folder / MANIFEST).is_file():
            log.info("using the prepared dataset %s", folder)
            return Dataset.load(folder)
        return prepare_dataset(source, folder, raw=raw_path, filters=filters, overwrite=True, download=download)


def record_dataset(run_dir: RunDir, dataset: Dataset) -> None:
    """Write the run's `dataset.json` (see `dataset_of_run`)."""
    run_dir.record_dataset(dataset.path, sha256_file(dataset.path / MANIFEST), dataset.manifest.get("raw_path"))


def dataset_of_run(run_dir: RunDir, config: RunConfig, download: bool = True) -> Dataset:
    """The prepared dataset a finished run used, found from anywhere and without environment variables.

    When `config` reads the same data as the run did: the folder the run recorded, if it is still
    there with the same manifest; else the dataset prepared again from the raw source the run
    recorded. A config whose data section differs (an eval with `--set data.*`) gets its own dataset.
    """
    recorded = run_dir.recorded_dataset()
    if recorded is None or to_dict(config.data) != to_dict(run_dir.config().data):
        return dataset_for(config.data, download)
    folder = Path(recorded["path"])
    if (folder / MANIFEST).is_file() and sha256_file(folder / MANIFEST) == recorded.get("manifest_sha256"):
        return Dataset.load(folder)
    raw = recorded.get("raw_path")
    if config.data.path is None and raw and Path(raw).exists():
        log.info("the run's dataset %s is gone or changed; preparing it again from %s", folder, raw)
        return dataset_for(dataclasses.replace(config.data, raw=raw), download)
    return dataset_for(config.data, download)


def split_for(dataset: Dataset, config: RunConfig) -> Split:
    s = config.split
    return make_split(
        dataset.sequences,
        s.protocol,
        valid_fraction=s.valid_fraction,
        test_fraction=s.test_fraction,
        valid_time=s.valid_time,
        test_time=s.test_time,
        time_targets=s.time_targets,
        seed=s.seed,
        predefined=dataset.split_cases,
    )


def trainer_without_run_dir(config: RunConfig) -> Trainer:
    """A Trainer for `config` that writes nothing (no run directory, no progress bars): the model
    seeded with `config.seed`, its dataset and split. For benchmarks and profiles of training steps."""
    dataset = dataset_for(config.data)
    torch.manual_seed(config.seed)
    return Trainer(build_model(dataset, config), split_for(dataset, config), config, None, progress=False)


def evaluate_split(
    scorer: Scorer,
    dataset: Dataset,
    split: Split,
    which: str,
    config: RunConfig,
    progress: bool = True,
    cold: int | None = None,
) -> dict[str, float]:
    """Metrics of `scorer` on the `which` cases; `cold`: only targets with at most that many training events."""
    e = config.eval
    cases = (split.cases(which) if cold is None else split.cold_cases(which, cold)).sample(e.max_cases)
    return evaluate(
        scorer,
        split.sequences,
        cases,
        dataset.num_items,
        ks=e.ks,
        batch_size=e.batch_size,
        mask_history=e.mask_history,
        progress=progress,
        desc=f"eval {which}",
    )


@dataclass
class RunResult:
    run_dir: Path
    dataset: Dataset
    metrics: dict[str, dict[str, float]]  # split name -> metrics


def scorer_for(dataset: Dataset, split: Split, config: RunConfig, run_dir: Path | None = None) -> Scorer:
    """A scorer for evaluation: popularity is fitted on the spot, neural models load their best checkpoint."""
    if config.model.name == "popularity":
        return _fit_popularity(dataset, split, config)
    return _load_trained(dataset, split, config, run_dir)


def run(
    config: RunConfig, out: str | Path, overwrite: bool = False, progress: bool = True, resume: bool = False
) -> RunResult:
    """Prepare the data, train (or fit) the model, select it on validation, test it once, and write
    the run directory. Under torchrun every process calls this; rank 0 alone writes."""
    if not resume:
        check_output_not_input(out, run_inputs(config))
    context = init_distributed(resolve_device(config.train.device).type)
    try:
        # rank 0 alone writes (and locks) the run directory; the others only read the dataset it prepared
        writing = RunDir.writing(out, config, overwrite, resume) if context.is_main else nullcontext(RunDir(out))
        with writing as run_dir:
            if context.is_main:
                dataset = dataset_of_run(run_dir, config) if resume else dataset_for(config.data)  # prepared by rank 0
                record_dataset(run_dir, dataset)
            context.barrier()
            if not context.is_main:
                dataset = dataset_for(config.data, download=False)
            split = split_for(dataset, config)
            metrics: dict[str, Any]
            if config.model.name == "popularity":
                scorer = _fit_popularity(dataset, split, config)
                metrics = {w: evaluate_split(scorer, dataset, split, w, config, progress) for w in ("valid", "test")}
                for which in ("valid", "test"):
                    run_dir.log_metrics({"split": which, "final": True, **metrics[which]})
            elif config.model.name == "ranker":
                from genrec.ranking_run import fit_ranker

                model = build_model(dataset, config, progress)
                metrics = fit_ranker(model, dataset, split, config, run_dir, context, progress, resume)  # type: ignore[arg-type]
                if resume and context.is_main:
                    run_dir.save_config(config)
            else:
                trainer = Trainer(
                    build_model(dataset, config, progress), split, config, run_dir, context, progress=progress
                )
                if resume:
                    trainer.resume(run_dir.path / LAST_CHECKPOINT)
                    if context.is_main:  # only now that the checkpoint fits: train.epochs may have been extended
                        run_dir.save_config(config)
                metrics = trainer.fit()
            if context.is_main:
                run_dir.write_metrics(
                    {"model": config.model.name, "dataset": str(dataset.path), "protocol": split.protocol, **metrics}
                )
        # every process waits here before the group is destroyed: a process leaving while another still
        # talks to gloo aborts it ("terminate called without an active exception")
        context.barrier()
        return RunResult(run_dir.path, dataset, {k: v for k, v in metrics.items() if k in ("valid", "test")})
    finally:
        shutdown_distributed(context)


def run_rl(
    config: RunConfig,
    out: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
    stop_after_step: int | None = None,
) -> dict[str, Any] | None:
    """GRPO from the best checkpoint of the SFT run `config.rl.sft_run`, on the shared trainer;
    writes a run directory `genrec eval` reads.

    resume=True continues the run in `out` from its last checkpoint (written at every validation and
    epoch end) and reaches the same weights as a run that never stopped. stop_after_step: return None
    after the first checkpoint at or past that step (as if the run were interrupted there).
    """
    from genrec.llm.grpo import GRPOObjective

    out = Path(out)
    if not config.rl.sft_run:
        raise ConfigError(
            f"cannot run {out} as an RL run: its config has no rl.sft_run (an RL run starts from an SFT run: "
            f"genrec llm rl --from RUN_DIR; an SFT run resumes with genrec train --resume)"
        )
    if resume and not (out / LAST_CHECKPOINT).is_file():
        raise ConfigError(f"cannot resume: no checkpoint at {out / LAST_CHECKPOINT}")
    if not resume:
        check_output_not_input(out, run_inputs(config))
    sft_run = Path(config.rl.sft_run)
    with RunDir.writing(out, config, overwrite, resume) as run_dir:
        dataset = dataset_of_run(RunDir.open(sft_run), config)  # RL reads the SFT run's data
        record_dataset(run_dir, dataset)
        split = split_for(dataset, config)
        model = build_model(dataset, config, progress)
        load_weights(model, sft_run / BEST_CHECKPOINT)
        reward_scorer = None
        if config.rl.reward == "collaborative":
            cf_run = Path(config.rl.collaborative_run or "")
            reward_scorer = scorer_for(dataset, split, RunDir.open(cf_run).config(), cf_run)
        objective = GRPOObjective(model, split.train, config.rl, config.seed, reward_scorer)  # type: ignore[arg-type]
        trainer = Trainer(model, split, config, run_dir, progress=progress, objective=objective)
        if resume:
            trainer.resume(run_dir.path / LAST_CHECKPOINT)
            run_dir.save_config(config)  # only now that the checkpoint fits: train.max_steps may have been extended
        results = trainer.fit(stop_after_step=stop_after_step)
        if results is None:
            return None
        summary = {
            "model": config.model.name,
            "stage": "grpo",
            "from": str(sft_run),
            "dataset": str(dataset.path),
            "protocol": split.protocol,
            **results,
        }
        run_dir.write_metrics(summary)
        return summary


def run_inputs(config: RunConfig) -> dict[str, str | None]:
    """The paths a run reads (name -> path), which its run directory must neither be, contain nor lie in."""
    raw = None if config.data.raw is None else os.path.expandvars(config.data.raw)
    return {
        "dataset (data.path)": config.data.path,
        "raw data (data.raw)": raw if raw and "$" not in raw else None,
        "SFT run (rl.sft_run)": config.rl.sft_run,
        "collaborative run (rl.collaborative_run)": config.rl.collaborative_run,
    }


# HSTU: the searched recipe (BENCHMARKS.md "ID models vs peers"), ahead of hstu.yaml at 30 epochs too
QUICKSTART_RECIPES = ("ml-100k/popularity", "ml-100k/sasrec", "ml-100k/hstu-tuned")
QUICKSTART_EPOCHS = 30  # the default budget: the recipes' up to 200 epochs (with early stopping) need --full


def quickstart(
    out: str | Path,
    raw: str | None = None,
    epochs: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    full: bool = False,
) -> list[tuple[RunConfig, RunResult]]:
    """Run the quickstart recipes on MovieLens-100K, one run directory each under `out`.

    raw: the local ml-100k folder (default: $GENREC_DATA_DIR, the cache, a download).
    epochs: the training epochs of the trained models; default `QUICKSTART_EPOCHS`, or with `full`
        the recipes' own (up to 200, with early stopping).
    """
    from genrec.config import load_config

    if epochs is None and not full:
        epochs = QUICKSTART_EPOCHS
    results = []
    for recipe in QUICKSTART_RECIPES:
        overrides = [f"data.raw={raw}"] if raw else []
        config = load_config(recipe, overrides)
        if epochs is not None and config.model.name != "popularity":
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
        log.info("quickstart: %s", recipe)
        results.append((config, run(config, Path(out) / config.model.name, overwrite=overwrite, progress=progress)))
    return results


def format_table(rows: list[tuple[str, dict[str, float]]], columns: list[str] | None = None) -> str:
    """A plain-text table: one row per (label, metrics)."""
    columns = columns or [c for c in ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr", "num_users") if c in rows[0][1]]
    width = max(len(label) for label, _ in rows)
    head = f"{'':<{width}}  " + "  ".join(f"{c:>9}" for c in columns)
    lines = [head, "-" * len(head)]
    for label, m in rows:
        cells = [f"{m[c]:>9d}" if isinstance(m[c], int) else f"{m[c]:>9.4f}" for c in columns]
        lines.append(f"{label:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


__all__ = [
    "RunResult",
    "build_model",
    "dataset_for",
    "dataset_of_run",
    "format_table",
    "quickstart",
    "run",
    "run_rl",
    "scorer_for",
    "split_for",
    "to_dict",
]
