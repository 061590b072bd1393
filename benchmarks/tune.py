"""A seeded hyper-parameter search on validation NDCG@10 (Optuna TPE, median pruning), one
`genrec train` child per trial, so a trial is exactly a run a user could repeat.

    python benchmarks/tune.py ml-100k/hstu --space hstu --trials 24 --out runs/tune/ml-100k-hstu \
        [--threads 1] [--seed 0] [--set KEY=VALUE ...]

Each trial trains the recipe with the sampled overrides and `--set` on the recipe's seed, writing
its run directory under --out/trial-<n>. While it runs, its validation curve (metrics.jsonl) is
reported to Optuna after every evaluation; a trial whose curve is below the median of earlier
trials at the same epoch (after `--warmup-epochs`) is stopped. The value is the best validation
NDCG@10 of the run (the test split is never read). The study is stored in --out/study.db, so an
interrupted search continues. Prints the trials sorted by value and the best overrides, ready for
`benchmarks/seed_sweep.py`, which is where winners are confirmed over several seeds.

Needs `pip install optuna` (the `tune` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SPACES: dict[str, dict[str, tuple]] = {
    # name: (kind, *choices or bounds); kinds: cat, float (uniform), log (log-uniform)
    "hstu": {
        "model.dropout": ("cat", 0.1, 0.2, 0.3, 0.4, 0.5),
        "model.attention_dropout": ("cat", 0.0, 0.1, 0.2),
        "model.dim": ("cat", 50, 64, 96, 128),
        "model.num_blocks": ("cat", 2, 3, 4),
        "model.num_heads": ("cat", 1, 2),
        "train.lr": ("log", 3e-4, 3e-3),
        "train.weight_decay": ("cat", 0.0, 0.01, 0.1),
        "train.loss.num_negatives": ("cat", 64, 128, 256, 512),
        "train.loss.temperature": ("cat", 0.03, 0.05, 0.07, 0.1),
        "train.batch_size": ("cat", 16, 32, 64),
    },
    "sasrec": {
        "model.dropout": ("cat", 0.1, 0.2, 0.3, 0.4, 0.5),
        "model.dim": ("cat", 50, 64, 96, 128),
        "model.num_blocks": ("cat", 2, 3, 4),
        "model.num_heads": ("cat", 1, 2),
        "train.lr": ("log", 3e-4, 3e-3),
        "train.weight_decay": ("cat", 0.0, 0.01, 0.1),
        "train.batch_size": ("cat", 16, 32, 64),
    },
    # the full softmax (every item a negative: cheap for catalogues of a few thousand items), with
    # its temperature and stronger regularisation in the space; for small, sparse datasets
    "sasrec-full": {
        "model.dropout": ("cat", 0.3, 0.4, 0.5, 0.6, 0.7),
        "model.dim": ("cat", 50, 64, 96, 128),
        "model.num_blocks": ("cat", 1, 2, 3, 4),
        "model.num_heads": ("cat", 1, 2),
        "model.l2_norm": ("cat", False, True),
        "train.lr": ("log", 5e-4, 5e-3),
        "train.weight_decay": ("cat", 0.01, 0.1, 0.3),
        "train.loss.temperature": ("log", 0.02, 1.0),
        "train.batch_size": ("cat", 16, 32, 64, 128),
    },
    # a second round around the first's winner on Amazon Scientific (L2 vectors; its dropout 0.3 and
    # weight decay 0.3 were at the edges of "sasrec-full"), with the feed-forward width searched too
    "sasrec-full-2": {
        "model.dropout": ("cat", 0.1, 0.2, 0.3, 0.4),
        "model.dim": ("cat", 64, 96, 128),
        "model.ffn_dim": ("cat", 50, 128, 256),
        "model.num_blocks": ("cat", 1, 2, 3),
        "model.num_heads": ("cat", 1, 2),
        "train.lr": ("log", 2e-4, 2e-3),
        "train.weight_decay": ("cat", 0.1, 0.3, 0.6, 1.0),
        "train.loss.temperature": ("log", 0.1, 0.5),
        "train.batch_size": ("cat", 8, 16, 32),
    },
    "hstu-full": {
        "model.dropout": ("cat", 0.2, 0.3, 0.4, 0.5, 0.6),
        "model.attention_dropout": ("cat", 0.0, 0.1, 0.2),
        "model.dim": ("cat", 50, 64, 96, 128),
        "model.num_blocks": ("cat", 1, 2, 3, 4),
        "model.num_heads": ("cat", 1, 2),
        "train.lr": ("log", 5e-4, 5e-3),
        "train.weight_decay": ("cat", 0.0, 0.01, 0.1, 0.3),
        "train.loss.temperature": ("log", 0.02, 0.2),
        "train.batch_size": ("cat", 16, 32, 64, 128),
    },
    # a second round around the first's winners on Amazon Scientific (dropout 0.6 and temperature
    # ~0.15 were at or near the edges of "hstu-full")
    "hstu-full-2": {
        "model.dropout": ("cat", 0.5, 0.6, 0.7, 0.8),
        "model.attention_dropout": ("cat", 0.1, 0.2, 0.3),
        "model.dim": ("cat", 48, 64, 80),
        "model.num_blocks": ("cat", 2, 3, 4),
        "train.lr": ("log", 2e-3, 8e-3),
        "train.weight_decay": ("cat", 0.0, 0.01, 0.1),
        "train.loss.temperature": ("log", 0.08, 0.4),
        "train.batch_size": ("cat", 16, 32),
    },
}


def sample(trial: Any, space_name: str) -> dict[str, Any]:
    """The overrides of one trial, drawn from SPACES[space_name]."""
    values: dict[str, Any] = {}
    for key, (kind, *args) in SPACES[space_name].items():
        if kind == "cat":
            values[key] = trial.suggest_categorical(key, list(args))
        elif kind == "log":
            values[key] = trial.suggest_float(key, args[0], args[1], log=True)
        else:
            values[key] = trial.suggest_float(key, args[0], args[1])
    if space_name.startswith("hstu"):  # the per-head sizes follow the width
        heads = values.get("model.num_heads", 1)
        values["model.attention_dim"] = values["model.value_dim"] = values["model.dim"] // heads
    return values


def recipe_value(config: Any, key: str) -> Any:
    """The value of a dotted key ("train.loss.temperature") in a loaded config."""
    node = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def in_space(spec: tuple, value: Any) -> bool:
    """Whether `value` is one of a categorical's choices or within a float range's bounds."""
    kind, *args = spec
    if kind == "cat":
        return value in args
    return value is not None and args[0] <= value <= args[1]


def valid_curve(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    """(epoch, validation metric) of the evaluations a run has logged so far."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    curve = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the line being written
            continue
        if record.get("split") == "valid" and not record.get("final") and metric in record:
            curve.append((int(record["epoch"]), float(record[metric])))
    return curve


def run_trial(trial: Any, args: argparse.Namespace) -> float:
    import optuna

    overrides = sample(trial, args.space)
    run_dir = args.out / f"trial-{trial.number}"
    command = [sys.executable, "-m", "genrec", "train", args.recipe, "--quiet", "--out", str(run_dir), "--overwrite"]
    for key, value in [*overrides.items(), *(s.split("=", 1) for s in args.set)]:
        command += ["--set", f"{key}={value}"]
    env = dict(os.environ)
    if args.threads:
        command += ["--threads", str(args.threads)]
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    trial.set_user_attr("overrides", overrides)
    print(f"trial {trial.number}: {json.dumps(overrides)}", flush=True)
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reported, best = 0, float("-inf")
    while child.poll() is None:
        time.sleep(2)
        curve = valid_curve(run_dir, args.metric)
        for epoch, value in curve[reported:]:
            best = max(best, value)
            trial.report(best, epoch)  # the best so far: what early stopping would keep
            reported += 1
            if epoch >= args.warmup_epochs and trial.should_prune():
                child.kill()
                child.wait()
                raise optuna.TrialPruned(f"epoch {epoch}: best {args.metric} so far below the median")
    if child.returncode != 0:
        raise RuntimeError(f"trial {trial.number} failed:\n{child.stderr.read()[-2000:]}")
    result = json.loads((run_dir / "metrics.json").read_text())
    trial.set_user_attr("best_epoch", result.get("best_epoch"))
    return float(result["valid"][args.metric])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--space", choices=sorted(SPACES), required=True)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--warmup-epochs", type=int, default=8, help="no pruning before this epoch")
    parser.add_argument("--set", action="append", default=[], help="fixed override for every trial")
    args = parser.parse_args()
    try:
        import optuna
    except ImportError:
        raise SystemExit("benchmarks/tune.py needs optuna: pip install 'genrec[tune]'") from None

    args.out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=f"{args.space}:{args.recipe}",
        storage=f"sqlite:///{args.out / 'study.db'}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=8),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=args.warmup_epochs),
    )
    if not study.trials:  # trial 0 is the recipe as shipped, so the search starts from its value
        from genrec.config import load_config

        config = load_config(args.recipe, args.set)
        start = {key: recipe_value(config, key) for key in SPACES[args.space]}
        # a recipe value outside the space (e.g. batch 128 against 16-64) is left to the sampler
        study.enqueue_trial({key: value for key, value in start.items() if in_space(SPACES[args.space][key], value)})
    done = len([t for t in study.trials if t.state.is_finished()])
    study.optimize(
        lambda trial: run_trial(trial, args),
        n_trials=max(0, args.trials - done),
        catch=(RuntimeError,),
    )
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    finished.sort(key=lambda t: -t.value)
    print(f"\n{len(finished)} complete, {len(study.trials) - len(finished)} pruned or failed; valid {args.metric}:")
    for t in finished[:10]:
        print(
            f"  trial {t.number}: {t.value:.4f} (best epoch {t.user_attrs.get('best_epoch')}) {t.user_attrs['overrides']}"
        )
    if finished:
        best = finished[0].user_attrs["overrides"]
        print("best overrides: " + " ".join(f"--set {k}={v}" for k, v in best.items()))


if __name__ == "__main__":
    main()
