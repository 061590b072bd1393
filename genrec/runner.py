"""Glue from a `RunConfig` to results: dataset -> split -> model -> evaluation -> run directory.

The CLI calls these functions and nothing else, so everything it does is also a library call.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genrec.config import DataConfig, RunConfig, to_dict
from genrec.data.dataset import MANIFEST, Dataset
from genrec.data.filters import Filters
from genrec.data.prepare import prepare_dataset
from genrec.data.raw import cache_dir
from genrec.data.sources import get_source
from genrec.data.splits import Split, make_split
from genrec.eval.evaluator import Scorer, evaluate
from genrec.models.popularity import Popularity
from genrec.runs import RunDir

log = logging.getLogger("genrec")


def _fit_popularity(dataset: Dataset, split: Split, config: RunConfig) -> Scorer:
    return Popularity(dataset.num_items).fit(split.train)


# model name -> function building a fitted scorer
MODELS: dict[str, Callable[[Dataset, Split, RunConfig], Scorer]] = {"popularity": _fit_popularity}


def filters_of(data: DataConfig) -> Filters:
    return Filters(min_rating=data.min_rating, dedup=data.dedup, user_core=data.user_core, item_core=data.item_core)


def dataset_for(data: DataConfig, download: bool = True) -> Dataset:
    """The prepared dataset a config names: `data.path`, or one prepared once into the cache."""
    if data.path is not None:
        return Dataset.load(data.path)
    source = get_source(data.source, **data.options)
    raw_path = source.locate(data.raw, download).resolve()
    filters = filters_of(data)
    key_text = json.dumps([data.source, source.options(), filters.to_dict(), str(raw_path)], sort_keys=True)
    key = hashlib.sha1(key_text.encode()).hexdigest()[:10]
    folder = cache_dir() / "datasets" / f"{data.source}-{key}"
    if (folder / MANIFEST).is_file():
        log.info("using the prepared dataset %s", folder)
        return Dataset.load(folder)
    return prepare_dataset(source, folder, raw=raw_path, filters=filters, overwrite=True, download=download)


def split_for(dataset: Dataset, config: RunConfig) -> Split:
    s = config.split
    return make_split(dataset.sequences, s.protocol, valid_fraction=s.valid_fraction, test_fraction=s.test_fraction,
                      valid_time=s.valid_time, test_time=s.test_time, time_targets=s.time_targets, seed=s.seed,
                      predefined=dataset.split_cases)  # fmt: skip


def evaluate_split(scorer: Scorer, dataset: Dataset, split: Split, which: str, config: RunConfig,
                   progress: bool = True) -> dict[str, float]:  # fmt: skip
    e = config.eval
    return evaluate(scorer, split.sequences, split.cases(which), dataset.num_items, ks=e.ks,
                    batch_size=e.batch_size, mask_history=e.mask_history, progress=progress, desc=f"eval {which}")  # fmt: skip


@dataclass
class RunResult:
    run_dir: Path
    dataset: Dataset
    metrics: dict[str, dict[str, float]]  # split name -> metrics


def run(config: RunConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> RunResult:
    """Prepare the data, fit the model, evaluate validation then test, and write the run directory."""
    run_dir = RunDir.create(out, config, overwrite)
    dataset = dataset_for(config.data)
    split = split_for(dataset, config)
    scorer = MODELS[config.model.name](dataset, split, config)
    metrics: dict[str, Any] = {}
    for which in ("valid", "test"):  # test once, at the end
        metrics[which] = evaluate_split(scorer, dataset, split, which, config, progress)
        run_dir.log_metrics({"split": which, **metrics[which]})
    run_dir.write_metrics({"model": config.model.name, "dataset": str(dataset.path), "protocol": split.protocol,
                           **metrics})  # fmt: skip
    return RunResult(run_dir.path, dataset, metrics)


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


__all__ = ["MODELS", "RunResult", "dataset_for", "format_table", "run", "split_for", "to_dict"]
