"""The `genrec` command. Each subcommand parses its flags and calls the library; no logic here."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genrec import __version__
from genrec.errors import GenrecError

if TYPE_CHECKING:
    from genrec.config import RunConfig


def _data_prepare(args: argparse.Namespace) -> int:
    from genrec.data.filters import Filters
    from genrec.data.prepare import prepare_dataset

    columns = ("user_col", "item_col", "time_col", "rating_col", "delimiter", "items", "items_id_col", "encoding")
    options = {k: getattr(args, k) for k in (*columns, "users", "users_id_col")}
    options.update(item_features=args.item_feature or None, user_features=args.user_feature or None)
    if args.text_cols is not None:
        options["text_cols"] = [c for c in args.text_cols.split(",") if c]
    options.update(
        name=args.name,
        category=args.category,
        five_core=False if args.all_reviews else None,
        ratings_only=True if args.ratings_only else None,
    )
    filters = Filters(
        min_rating=args.min_rating,
        dedup=args.dedup,
        user_core=args.user_core,
        item_core=args.item_core,
        core_once=args.core_once,
    )
    dataset = prepare_dataset(
        args.source,
        args.out,
        raw=args.raw,
        filters=filters,
        overwrite=args.overwrite,
        download=not args.no_download,
        **options,
    )
    _print_info(dataset.summary(), args.json)
    return 0


def _print_info(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    for key, value in summary.items():
        if key.endswith("_features") and isinstance(value, dict):  # one line per feature
            print(f"{key:>17}: " + f"\n{'':>19}".join(f"{name}: {text}" for name, text in value.items()))
            continue
        print(
            f"{key:>17}: {value:,}" if isinstance(value, int) and not isinstance(value, bool) else f"{key:>17}: {value}"
        )


def _data_info(args: argparse.Namespace) -> int:
    from genrec.data.dataset import Dataset

    _print_info(Dataset.load(args.dir).summary(), args.json)
    return 0


def _data_features(args: argparse.Namespace) -> int:
    from genrec.data.dataset import Dataset
    from genrec.data.vectors import attach_embedding, embed_item_texts, read_vectors

    dataset = Dataset.load(args.dir)
    if args.from_embeddings and args.embed_text:
        raise GenrecError("give either --from-embeddings FILE or --embed-text MODEL, not both")
    if args.from_embeddings or args.embed_text:
        if args.from_embeddings:
            vectors, present = read_vectors(args.from_embeddings, dataset)
        else:
            vectors, present = embed_item_texts(
                dataset,
                args.embed_text,
                args.gguf_file,
                args.pooling,
                args.max_tokens,
                args.batch_size,
                args.device or "cpu",
                _progress(args),
            )
        name = args.name or ("text_embedding" if args.embed_text else "embedding")
        dataset = attach_embedding(dataset, name, vectors, present, overwrite=args.overwrite)
    features = {side: [s.to_dict() for s in specs] for side, specs in dataset.features.items()}
    if args.json:
        print(json.dumps(features))
        return 0
    for side, specs in dataset.features.items():
        print(f"{side} features:" + ("" if specs else " none"))
        for spec in specs:
            print(f"  {spec.name}: {spec.describe()}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from genrec.config import RunConfig, apply_overrides, from_dict, to_dict
    from genrec.run_dir import RunDir
    from genrec.runner import dataset_for, dataset_of_run, evaluate_split, format_table, scorer_for, split_for

    if args.run_dir is not None:
        if args.data is not None or args.model is not None:
            raise GenrecError("give either a RUN_DIR or --data/--model, not both")
        base = to_dict(RunDir.open(args.run_dir).config())
        overrides = []
    else:
        if args.data is None:
            raise GenrecError("genrec eval needs a RUN_DIR or --data DIR (a prepared dataset)")
        base = {}
        overrides = [f"data.path={args.data}", f"model.name={args.model or 'popularity'}"]
    overrides += _shortcut_overrides(args)
    overrides += [f"split.protocol={args.protocol}"] if args.protocol else []
    overrides += [f"eval.ks=[{args.ks}]"] if args.ks else []
    config = from_dict(RunConfig, apply_overrides(base, overrides + args.set))
    dataset = dataset_for(config.data) if args.run_dir is None else dataset_of_run(RunDir.open(args.run_dir), config)
    if args.new_items and args.cold is not None:
        raise GenrecError("give either --cold N or --new-items (the same as --cold 0), not both")
    cold_count = 0 if args.new_items else args.cold  # new items: no training event at all
    split = split_for(dataset, config)
    scorer = scorer_for(dataset, split, config, None if args.run_dir is None else Path(args.run_dir))
    metrics = evaluate_split(scorer, dataset, split, args.split, config, progress=_progress(args), cold=cold_count)
    ranking = {}
    if config.model.name == "ranker" and args.run_dir is not None:
        from genrec.ranking_run import evaluate_ranker_run

        ranking = {"ranking": evaluate_ranker_run(Path(args.run_dir), args.split)}
    if args.json:
        cold = {} if cold_count is None else {"cold_max_train_count": cold_count}
        cold.update({"new_items": True} if args.new_items else {})
        print(
            json.dumps(
                {
                    "model": config.model.name,
                    "split": args.split,
                    "protocol": split.protocol,
                    **cold,
                    **metrics,
                    **ranking,
                }
            )
        )
    else:
        print(format_table([(f"{config.model.name} ({args.split})", metrics)], columns=list(metrics)))
        if ranking:
            print(
                format_table([(f"ranker heads ({args.split})", ranking["ranking"])], columns=list(ranking["ranking"]))
            )
    return 0


def _rerank_weights(task: str | None) -> dict[str, float] | None:
    """--task "like" or "like=1,retrieval=0.5" -> {name: weight} (None: the ranker's first head)."""
    if not task:
        return None
    weights = {}
    for part in task.split(","):
        name, _, weight = part.partition("=")
        try:
            weights[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise GenrecError(f"--task: {part!r} is not name or name=weight (a number)") from None
    return weights


def _rank(args: argparse.Namespace) -> int:
    from genrec.ranking_run import two_stage
    from genrec.runner import format_table

    weights = _rerank_weights(args.task)
    results = two_stage(
        Path(args.retrieval_run), Path(args.ranker_run), args.k, args.candidates, weights, args.split, _progress(args)
    )
    if args.json:
        print(json.dumps(results))
    else:
        rows = [(f"{name} ({args.split})", metrics) for name, metrics in results.items()]
        print(format_table(rows, columns=[f"hr@{args.k}", f"ndcg@{args.k}", "mrr", "num_users"]))
        print(
            f"retrieval kept {results['two-stage'][f'recall@{args.candidates}']:.4f} of the targets in its top {args.candidates}"
        )
    return 0


def _resumed_config(run_dir: str, given: RunConfig | None, overrides: list[str], may_change: str) -> RunConfig:
    """The config of a resumed run: the run's own (or `given`) with the overrides; only `may_change` may differ."""
    from genrec.config import RunConfig, apply_overrides, config_differences, from_dict, to_dict
    from genrec.run_dir import RunDir

    saved = RunDir.open(run_dir).config()
    config = given or from_dict(RunConfig, apply_overrides(to_dict(saved), overrides))
    changed = [key for key in config_differences(saved, config) if key != may_change]
    if changed:
        raise GenrecError(
            f"--resume {run_dir}: the config differs from the run's in {', '.join(changed)}; "
            f"only {may_change} may change when resuming (start a new run instead)"
        )
    return config


def _train(args: argparse.Namespace) -> int:
    from genrec.config import load_config
    from genrec.run_dir import default_run_dir
    from genrec.runner import format_table, run

    args.set = args.set + _shortcut_overrides(args)

    if args.resume:
        config = _resumed_config(
            args.resume, load_config(args.config, args.set) if args.config else None, args.set, "train.epochs"
        )
        out = args.resume
    else:
        config = load_config(args.config, args.set)
        if args.out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise GenrecError("under torchrun, pass --out RUN_DIR so that every process writes to the same run")
        out = args.out or default_run_dir(config.name)
    result = run(config, out, overwrite=args.overwrite, progress=_progress(args), resume=bool(args.resume))
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    if args.json:
        print(json.dumps({"run_dir": str(result.run_dir), **result.metrics}))
    else:
        print(format_table([(f"{config.model.name} ({k})", m) for k, m in result.metrics.items()]))
        print(f"\nrun directory: {result.run_dir}")
    return 0


def _llm_sft(args: argparse.Namespace) -> int:
    from genrec.config import load_config

    name = load_config(args.config, args.set).model.name
    if name != "sid-llm":
        raise GenrecError(
            f"genrec llm sft trains the SID LLM (model.name: sid-llm); {args.config} has model {name!r}: "
            f"use genrec train"
        )
    return _train(args)


def _llm_rl(args: argparse.Namespace) -> int:
    from genrec.llm.grpo import rl_config
    from genrec.runner import format_table, run_rl

    if args.resume:
        if args.from_run or args.config or args.out:
            raise GenrecError(
                "genrec llm rl --resume RUN_DIR continues that run, in place, with its own config and "
                "SFT run: drop CONFIG, --from and --out"
            )
        config, out = _resumed_config(args.resume, None, args.set, "train.max_steps"), Path(args.resume)
    elif args.from_run and args.out:
        config, out = rl_config(args.config, args.set, Path(args.from_run)), Path(args.out)
    else:
        raise GenrecError("genrec llm rl needs --from SFT_RUN_DIR and --out RUN_DIR (or --resume RUN_DIR)")
    summary = run_rl(config, out, overwrite=args.overwrite, progress=_progress(args), resume=bool(args.resume))
    assert summary is not None
    if args.json:
        print(json.dumps({"run_dir": str(out), **summary}))
    else:
        print(format_table([(f"sid-llm grpo ({k})", summary[k]) for k in ("valid", "test")]))
        print(f"\nrun directory: {out}")
    return 0


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `genrec train` and `genrec llm sft` share."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--out", help="run directory (default runs/<name>-<time>)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run that --out holds (its config, metrics and checkpoints)",
    )
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    _add_seed_and_device(parser)


def _add_seed_and_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, help="random seed (the same as --set seed=N)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (the same as --set train.device=DEVICE)")


def _shortcut_overrides(args: argparse.Namespace) -> list[str]:
    """--seed / --device as the `--set` overrides they stand for."""
    return ([f"seed={args.seed}"] if args.seed is not None else []) + (
        [f"train.device={args.device}"] if args.device else []
    )


def _export(args: argparse.Namespace) -> int:
    from genrec.serve.export import export_item_embeddings

    if args.users:
        return _export_ranker_tables(args)
    out = export_item_embeddings(args.run_dir, args.out, overwrite=args.overwrite, index=args.index)
    summary = json.loads((out / "export.json").read_text())
    if args.json:
        print(json.dumps({"out": str(out), **summary}))
    else:
        print(f"{summary['num_items']:,} item embeddings of dimension {summary['dim']} -> {out}")
        print("files: " + ", ".join(summary["files"]))
    return 0


def _export_ranker_tables(args: argparse.Namespace) -> int:
    from genrec.serve.stored_ranking import SUMMARY, export_ranker_tables

    if args.index:
        raise GenrecError("--users writes a late-fusion ranker's tables, which have no ANN index: drop --index")
    out = export_ranker_tables(args.run_dir, args.out, overwrite=args.overwrite)
    summary = json.loads((out / SUMMARY).read_text())
    if args.json:
        print(json.dumps({"out": str(out), **summary}))
    else:
        print(
            f"{summary['num_users']:,} user and {summary['num_items']:,} item vectors "
            f"of dimension {summary['dim']} -> {out}"
        )
        print("files: " + ", ".join(summary["files"]))
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from genrec.io import check_output_not_input
    from genrec.run_dir import RUN_FILES
    from genrec.serve.batch import recommend_to_parquet
    from genrec.serve.recommender import Recommender

    if args.users is not None and args.histories is not None:
        raise GenrecError("give either --users or --histories, not both")
    run = Path(args.run_dir)
    inputs = {f"run's {name}": run / name for name in RUN_FILES}
    inputs.update(
        {
            "--histories file": args.histories,
            "--index": args.index,
            "--users file": None if args.users in (None, "all") else args.users,
        }
    )
    check_output_not_input(args.out, inputs)
    if args.ranker is None and (args.task is not None or args.candidates is not None):
        raise GenrecError("--task and --candidates choose how --ranker reranks: give --ranker RANKER_RUN")
    recommender = Recommender.from_run(
        run,
        device=args.device,
        index=args.index,
        progress=_progress(args),
        ranker_run=args.ranker,
        candidates=args.candidates or 200,
        rerank=_rerank_weights(args.task),
    )
    check_output_not_input(args.out, {"dataset": recommender.dataset.path})
    summary = recommend_to_parquet(
        recommender,
        args.out,
        k=args.k,
        users=args.users or "all",
        histories=args.histories,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        progress=_progress(args),
    )
    report = {
        "out": str(summary.out),
        "requests": summary.requests,
        "rows": summary.rows,
        "skipped_users": summary.skipped_users,
        "fallback": summary.fallback,
    }
    if args.json:
        print(json.dumps(report))
    else:
        what = "requests" if args.histories else "users"
        print(f"top {args.k} of {summary.requests:,} {what} -> {summary.out} ({summary.rows:,} rows)")
        if summary.skipped_users or summary.fallback:
            print(
                f"{summary.skipped_users:,} unknown users skipped; {summary.fallback:,} answered with the popularity "
                f"list (no known history item)"
            )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from genrec.optional import require
    from genrec.serve.recommender import Recommender

    require("fastapi")
    require("uvicorn")
    import uvicorn

    from genrec.run_dir import RunDir
    from genrec.serve.app import create_app

    RunDir.open(args.run_dir).config()  # a wrong path fails now, with one line, not in the server's log
    if args.index is not None:
        from genrec.serve.index import ItemIndex

        ItemIndex.load(args.index)  # the same: check before the port opens
    load = lambda: Recommender.from_run(args.run_dir, device=args.device, index=args.index, progress=False)  # noqa: E731
    if not args.load_in_background:
        recommender = load()
        load = lambda: recommender  # noqa: E731
    app = create_app(load, max_history=args.max_history, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("genrec").warning("serving on %s: reachable from other machines", args.host)
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info", timeout_graceful_shutdown=10
    )
    return 0


def _sid_build(args: argparse.Namespace) -> int:
    from genrec.data.dataset import Dataset
    from genrec.io import check_output_not_input
    from genrec.items.semantic_ids import write_index_json
    from genrec.items.sid_builder import SIDBuildConfig, build_semantic_ids

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise GenrecError(f"{out} exists; pass --overwrite to replace it")
    data = Path(args.data)
    check_output_not_input(out, {f"dataset's {p.name}": p for p in sorted(data.iterdir())} if data.is_dir() else {})
    config = SIDBuildConfig(
        method=args.method,
        collisions=args.collisions,
        seed=args.seed,
        codebook_sizes=[int(k) for k in args.levels.split(",")],
        fields=args.fields.split(",") if args.fields else SIDBuildConfig().fields,
    )
    if args.epochs is not None:
        config.rqvae.epochs = args.epochs
    dataset = Dataset.load(args.data)
    sids, report = build_semantic_ids(dataset, args.embedder, config, args.gguf_file, progress=_progress(args))
    write_index_json(sids, [str(k) for k in dataset.item_raw_ids()], out)
    summary = {"out": str(out), "num_items": sids.num_items, "levels": sids.codebook_sizes, **report.__dict__}
    print(json.dumps(summary) if args.json else f"{sids.num_items:,} items -> {out}\n{report.summary()}")
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from genrec.io import check_output_not_input
    from genrec.run_dir import default_run_dir
    from genrec.runner import QUICKSTART_EPOCHS, format_table, quickstart

    out = Path(args.out or default_run_dir("quickstart"))
    check_output_not_input(out, {"raw data (--raw)": args.raw})
    if args.full and args.epochs is not None:
        raise GenrecError("give --full (the recipes' own epochs) or --epochs N, not both")
    budget = (
        "the recipes' epochs" if args.full else f"{args.epochs or QUICKSTART_EPOCHS} epochs each (--full: the recipes')"
    )
    print(
        f"genrec quickstart: popularity, SASRec and HSTU on MovieLens-100K, leave-one-out, full ranking; {budget}",
        file=sys.stderr,
    )
    results = quickstart(
        out, raw=args.raw, epochs=args.epochs, overwrite=args.overwrite, progress=_progress(args), full=args.full
    )
    d = results[0][1].dataset
    print(f"\ndataset: {d.path} ({d.num_users:,} users, {d.num_items:,} items, {d.num_interactions:,} interactions)")
    rows = [
        (f"{config.model.name} ({which})", result.metrics[which])
        for which in ("valid", "test")
        for config, result in results
    ]
    print(format_table(rows))
    print(f"\nrun directories: {out}/{{{','.join(config.model.name for config, _ in results)}}}")
    return 0


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars unless the output is --json or --quiet."""
    return not (getattr(args, "json", False) or args.quiet)


def _recipes(args: argparse.Namespace) -> int:
    from genrec.config import RECIPES, recipe_names

    rows = []
    for name in recipe_names():
        lines = (RECIPES / f"{name}.yaml").read_text(encoding="utf-8").splitlines()
        first = next((line.lstrip("# ").strip() for line in lines if line.startswith("#")), "")
        rows.append({"name": name, "description": first})
    if args.json:
        print(json.dumps(rows))
        return 0
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        print(f"{row['name']:<{width}}  {row['description']}")
    print("\nrun one with: genrec train NAME   (print its resolved config: genrec config NAME)")
    return 0


def _config(args: argparse.Namespace) -> int:
    from genrec.config import dump_yaml, load_config, to_dict

    config = load_config(args.config, args.set + _shortcut_overrides(args))
    print(json.dumps(to_dict(config), indent=2) if args.json else dump_yaml(config), end="\n" if args.json else "")
    return 0


def _common_options() -> argparse.ArgumentParser:
    """Options every command takes after its name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info messages, only results")
    common.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads for torch (default: the cores this process may use)"
    )
    return common


def _command(group: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand of `group` with the common options."""
    return group.add_parser(name, parents=[_common_options()], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from genrec.data.sources import SOURCES

    parser = argparse.ArgumentParser(
        prog="genrec", description="Generative recommendation: data, training, evaluation."
    )
    parser.add_argument("--version", action="version", version=f"genrec {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages, and show the traceback of an input error"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = _command(commands, "data", help="prepare and inspect datasets")
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    prep = _command(data_commands, "prepare", help="turn a raw release into a canonical dataset folder")
    prep.add_argument("source", metavar="SOURCE", help=f"one of: {', '.join(SOURCES)}")
    prep.add_argument("--raw", help="local copy: the release folder as distributed (csv/parquet: the events file)")
    prep.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    prep.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    prep.add_argument("--no-download", action="store_true", help="never download; fail if no local copy is found")
    prep.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    filters = prep.add_argument_group("filters (all off by default)")
    filters.add_argument("--min-rating", type=float, help="keep events with rating >= this")
    filters.add_argument("--dedup", action="store_true", help="keep only the first event of each (user, item) pair")
    filters.add_argument("--user-core", type=int, default=0, help="k-core: users need at least this many events")
    filters.add_argument("--item-core", type=int, default=0, help="k-core: items need at least this many events")
    filters.add_argument(
        "--core-once",
        action="store_true",
        help="apply the core limits in one pass on the raw counts, not iterated (generative-recommenders)",
    )
    prepared = prep.add_argument_group("sources whose folder can hold several datasets")
    prepared.add_argument("--name", help="dataset name (letter, recbole, minionerec, hllm-csv), e.g. Office_Products")
    prepared.add_argument("--category", help="Amazon category (amazon2014, amazon2018), e.g. Beauty")
    prepared.add_argument(
        "--all-reviews", action="store_true", help="amazon2018: read <Category>.json.gz, not the 5-core"
    )
    prepared.add_argument(
        "--ratings-only",
        action="store_true",
        help="amazon2014: read ratings_<Category>.csv (all ratings, no header), not the 5-core reviews",
    )
    generic = prep.add_argument_group("csv / parquet / hllm-csv sources: column mapping")
    generic.add_argument("--user-col", help="user id column (default user_id)")
    generic.add_argument("--item-col", help="item id column (default item_id)")
    generic.add_argument("--time-col", help="timestamp column: unix seconds or ISO-8601 (default timestamp)")
    generic.add_argument("--rating-col", help="optional rating column")
    generic.add_argument("--delimiter", help="CSV field separator (default ,)")
    generic.add_argument("--encoding", help="text encoding of the CSV files (default utf-8; e.g. latin-1, cp1252)")
    generic.add_argument("--items", help="optional item table (CSV or Parquet)")
    generic.add_argument("--items-id-col", help="item id column of the item table (default: --item-col)")
    generic.add_argument(
        "--text-cols", help="comma-separated text columns of the item table (default: all but the features)"
    )
    generic.add_argument(
        "--item-feature",
        action="append",
        metavar="COL:TYPE",
        help="a typed feature column of the item table (repeatable): TYPE is sparse, array (CSV: values "
        "separated by |) or continuous[:standard|log-standard|none], e.g. --item-feature genres:array",
    )
    generic.add_argument("--users", help="optional user table (CSV or Parquet) holding the --user-feature columns")
    generic.add_argument("--users-id-col", help="user id column of the user table (default: --user-col)")
    generic.add_argument(
        "--user-feature", action="append", metavar="COL:TYPE", help="a typed feature column of the user table"
    )
    prep.set_defaults(func=_data_prepare)

    info = _command(data_commands, "info", help="print a prepared dataset's counts")
    info.add_argument("dir", metavar="DIR")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_data_info)

    feat = _command(
        data_commands,
        "features",
        help="list a dataset's typed features, or attach item vectors to it as an embedding feature",
    )
    feat.add_argument("dir", metavar="DIR")
    attach = feat.add_argument_group("attach an embedding feature (written into DIR)")
    attach.add_argument(
        "--from-embeddings",
        metavar="FILE",
        help=".npy [N, D] (row r = item r+1) or [N+1, D]; .npz (genrec's item-embedding cache); "
        ".parquet with columns item (raw id) and vector",
    )
    attach.add_argument(
        "--embed-text", metavar="MODEL", help="embed the item text with a local model or python:PACKAGE"
    )
    attach.add_argument("--name", help="feature name (default embedding, or text_embedding with --embed-text)")
    attach.add_argument("--overwrite", action="store_true", help="replace an embedding feature of the same name")
    attach.add_argument("--gguf-file", help="--embed-text: a GGUF file in the model's directory")
    attach.add_argument("--pooling", choices=["mean", "last"], default="mean", help="--embed-text: (default mean)")
    attach.add_argument("--max-tokens", type=int, default=256, help="--embed-text: tokens per item (default 256)")
    attach.add_argument("--batch-size", type=int, default=32, help="--embed-text: items per batch (default 32)")
    attach.add_argument("--device", help="--embed-text: cpu, cuda, ... (default cpu)")
    feat.add_argument("--json", action="store_true", help="print the features as one JSON object")
    feat.set_defaults(func=_data_features)

    ev = _command(commands, "eval", help="full-ranking evaluation of a model or a run directory")
    ev.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run directory to evaluate")
    ev.add_argument("--data", help="a prepared dataset folder")
    ev.add_argument("--model", help="model name (default popularity)")
    ev.add_argument("--split", default="test", choices=["test", "valid"])
    ev.add_argument(
        "--protocol",
        choices=["auto", "leave-one-out", "time", "user", "predefined", "new-items"],
        help="default auto: the dataset's own split if it has one, else leave-one-out; new-items: the time "
        "split's cases whose target has no training event",
    )
    ev.add_argument("--ks", help="comma-separated cutoffs (default 1,5,10,50,200)")
    ev.add_argument(
        "--cold",
        type=int,
        metavar="N",
        help="only the cases whose target item has at most N training interactions (cold items)",
    )
    ev.add_argument(
        "--new-items",
        action="store_true",
        help="only the cases whose target item never occurs in training (new items; the same as --cold 0)",
    )
    ev.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. eval.mask_history=false",
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    _add_seed_and_device(ev)
    ev.set_defaults(func=_eval)

    rk = _command(commands, "rank", help="two stages: a retrieval run's top candidates reranked by a ranker run")
    rk.add_argument("retrieval_run", metavar="RETRIEVAL_RUN", help="the run directory of the retrieval model")
    rk.add_argument("ranker_run", metavar="RANKER_RUN", help="the run directory of the ranker (model.name: ranker)")
    rk.add_argument("--k", type=int, default=10, help="the cutoff of HR@K and NDCG@K (default 10)")
    rk.add_argument("--candidates", type=int, default=200, help="items retrieved per case (default 200)")
    rk.add_argument(
        "--task",
        help="the head(s) to rerank by: a name, or name=weight,... for a weighted sum of the heads' "
        "predictions (default the first head); retrieval=W blends in the retrieval score: "
        "z(heads) + W z(retrieval), each standardised over the candidates, e.g. event=1,retrieval=1",
    )
    rk.add_argument("--split", default="test", choices=["test", "valid"])
    rk.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    rk.set_defaults(func=_rank)

    tr = _command(commands, "train", help="run a config: prepare data, train, evaluate, write a run directory")
    tr.add_argument("config", nargs="?", metavar="CONFIG", help="YAML config (default: popularity on MovieLens-100K)")
    _add_training_arguments(tr)
    tr.set_defaults(func=_train)

    llm = _command(commands, "llm", help="the SID LLM recommender: supervised fine-tuning, then GRPO")
    llm_commands = llm.add_subparsers(dest="llm_command", required=True)
    sft = _command(
        llm_commands,
        "sft",
        help="fine-tune a causal LM to write the next item's SID (genrec train for model.name: sid-llm)",
    )
    sft.add_argument("config", metavar="CONFIG", help="YAML config with model.name: sid-llm")
    _add_training_arguments(sft)
    sft.set_defaults(func=_llm_sft)
    rl = _command(llm_commands, "rl", help="GRPO from an SFT run directory")
    rl.add_argument("config", nargs="?", metavar="CONFIG", help="YAML with the rl, train and eval sections")
    rl.add_argument("--from", dest="from_run", metavar="RUN_DIR", help="the SFT run to start from")
    rl.add_argument("--out", help="run directory to write")
    rl.add_argument("--resume", metavar="RUN_DIR", help="continue an RL run from its last checkpoint (last.pt)")
    rl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    rl.add_argument("--overwrite", action="store_true", help="replace the run that --out holds")
    rl.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    rl.set_defaults(func=_llm_rl)

    exp = _command(
        commands,
        "export",
        help="write a trained run's item embeddings (.npy, id map, .fbin/.u64bin); --users: a late-fusion ranker's "
        "tables",
    )
    exp.add_argument("run_dir", metavar="RUN_DIR")
    exp.add_argument("--out", help="output folder (default RUN_DIR/export, RUN_DIR/export-users with --users)")
    exp.add_argument(
        "--users",
        action="store_true",
        help="a late-fusion ranker run: write its stored tables (user and item vectors, the heads' MLP weights) "
        "to rank candidates with the MLP alone (genrec.serve.stored_ranking)",
    )
    exp.add_argument("--overwrite", action="store_true", help="replace an existing export")
    exp.add_argument(
        "--index",
        choices=["exact", "hnsw", "ivf"],
        help="also write a FAISS index of the embeddings (needs genrec[ann]): exact, hnsw (catalogues up to ~100k items), "
        "ivf (large catalogues); measurements in BENCHMARKS.md",
    )
    exp.add_argument("--json", action="store_true", help="print the export summary as one JSON object")
    exp.set_defaults(func=_export)

    rec = _command(commands, "recommend", help="write the top k of every user (or of request histories) to Parquet")
    rec.add_argument("run_dir", metavar="RUN_DIR")
    rec.add_argument(
        "--users",
        metavar="all|FILE",
        help="all users of the dataset (default), or a file of raw user ids, one per line",
    )
    rec.add_argument(
        "--histories",
        metavar="FILE",
        help="requests that are not dataset users: JSON lines or Parquet with a history column of raw item ids",
    )
    rec.add_argument("--k", type=int, default=100, help="items per user (default 100)")
    rec.add_argument("--out", required=True, help="the Parquet file to write (columns user, rank, item, score)")
    rec.add_argument(
        "--index", metavar="DIR", help="search this ANN index (genrec export --index) instead of scoring every item"
    )
    rec.add_argument("--batch-size", type=int, help="users scored at a time (default: a 64 MiB score matrix)")
    rec.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the run's train.device)")
    rec.add_argument(
        "--ranker", metavar="RANKER_RUN", help="rerank each request's top --candidates with this ranker run"
    )
    rec.add_argument("--candidates", type=int, help="items retrieved for --ranker to rerank (default 200)")
    rec.add_argument("--task", help="--ranker's heads to rerank by, as genrec rank --task (default the first head)")
    rec.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    rec.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    rec.set_defaults(func=_recommend)

    srv = _command(commands, "serve", help="serve a trained run over HTTP (needs genrec[serve]; docs at /docs)")
    srv.add_argument("run_dir", metavar="RUN_DIR")
    srv.add_argument("--index", metavar="DIR", help="an ANN index written by genrec export --index")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--device", help="cpu, cuda, ... (default: the run's train.device)")
    srv.add_argument(
        "--max-history", type=int, default=10_000, help="longest history a request may send (default 10000)"
    )
    srv.add_argument("--max-batch", type=int, default=64, help="concurrent requests scored together (default 64)")
    srv.add_argument(
        "--max-wait-ms",
        type=float,
        default=2.0,
        help="how long a request waits for others to share its batch (default 2 ms)",
    )
    srv.add_argument(
        "--load-in-background",
        action="store_true",
        help="open the port at once and load the model after (/readyz says when it is ready)",
    )
    srv.set_defaults(func=_serve)

    sid = _command(commands, "sid", help="semantic IDs: item text -> embeddings -> residual codes")
    sid_commands = sid.add_subparsers(dest="sid_command", required=True)
    sb = _command(sid_commands, "build", help="build unique SIDs for a prepared dataset; writes .index.json")
    sb.add_argument("--data", required=True, help="a prepared dataset folder (with item text)")
    sb.add_argument("--embedder", required=True, help="a local Hugging Face model directory, or python:PACKAGE")
    sb.add_argument("--gguf-file", help="a GGUF file in the embedder's directory")
    sb.add_argument("--method", choices=["rqkmeans", "rqvae"], default="rqkmeans")
    sb.add_argument("--levels", default="256,256,256", help="codes per level (default 256,256,256)")
    sb.add_argument(
        "--collisions",
        choices=["reassign", "extra-level"],
        default="reassign",
        help="reassign: nearest free last-level code (LETTER/MiniOneRec); extra-level: TIGER",
    )
    sb.add_argument("--fields", help="item text fields, comma-separated (default title,description)")
    sb.add_argument("--epochs", type=int, help="RQ-VAE training epochs (default 200)")
    sb.add_argument("--seed", type=int, default=0)
    sb.add_argument("--out", required=True, help="the .index.json file to write")
    sb.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    sb.add_argument("--json", action="store_true", help="print the report as one JSON object")
    sb.set_defaults(func=_sid_build)

    qs = _command(commands, "quickstart", help="prepare MovieLens-100K; train and evaluate popularity, SASRec, HSTU")
    qs.add_argument("--raw", help="local ml-100k folder (default: $GENREC_DATA_DIR/ml-100k, the cache, or download)")
    qs.add_argument("--out", help="folder of the run directories (default runs/quickstart-<time>)")
    qs.add_argument("--epochs", type=int, help="training epochs of SASRec and HSTU (default 30; 1 is a smoke run)")
    qs.add_argument(
        "--full",
        action="store_true",
        help="the recipes' own schedule: up to 200 epochs with early stopping (about 4x longer)",
    )
    qs.add_argument("--overwrite", action="store_true", help="replace the run directories under --out")
    qs.set_defaults(func=_quickstart)

    rc = _command(commands, "recipes", help="list the shipped recipes (configs) with one line each")
    rc.add_argument("--json", action="store_true", help="print the list as JSON")
    rc.set_defaults(func=_recipes)
    cf = _command(commands, "config", help="print a recipe's or config file's resolved config")
    cf.add_argument(
        "config", nargs="?", metavar="CONFIG", help="YAML config or recipe name (default: the built-in defaults)"
    )
    cf.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    cf.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    _add_seed_and_device(cf)
    cf.set_defaults(func=_config)
    return parser


_TORCH_COMMANDS = ("train", "eval", "rank", "llm", "export", "sid", "quickstart", "recommend", "serve")
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _report(exc: BaseException, message: str, verbose: bool) -> int:
    """Print an input error as one line (its traceback too with -v) and return the exit status 2."""
    if verbose:
        traceback.print_exception(exc)
    print("genrec: error: " + " ".join(line.strip() for line in message.splitlines() if line.strip()), file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    try:
        if args.threads is not None or args.command in _TORCH_COMMANDS:
            from genrec.threads import configure_threads

            configure_threads(args.threads)
        if args.command in _TORCH_COMMANDS:
            from genrec.allocator import keep_freed_memory

            keep_freed_memory()
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at the interpreter's exit
        return code
    except BrokenPipeError:
        # the reader of our output went away (`genrec ... --json | head`): not an error of ours
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except GenrecError as exc:
        return _report(exc, str(exc), args.verbose)
    except OSError as exc:
        # the machine's answer about a path the user chose (permissions, a full or read-only disk, a
        # file where a folder should be) is input too; other OSErrors stay tracebacks (bugs)
        if exc.filename is None and exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        return _report(exc, f"{exc.strerror or exc}{': ' + paths if paths else ''}", args.verbose)
    except KeyboardInterrupt:
        print("genrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
