"""Training speed and memory of genrec's HSTU against torch-rechub 0.9.0's HSTU, in one run.

    python benchmarks/hstu_speed.py [--config configs/ml-100k/hstu.yaml] [--epochs 8] [--rounds 1] [--only shipped reference ...] \
        [--rechub-python /work/bench-venvs/rechub/bin/python] [--work /tmp/genrec-speed]

Same data (the config's leave-one-out split, exported with benchmarks/external/exchange.py), same
model sizes (the config's; torch-rechub's script takes the same values), same machine, one after
the other, each in a fresh child process:

  genrec (shipped)   `genrec train CONFIG` as shipped (on a CPU: HSTU's chunked attention, packed
                     tokens, whole batches with rows sorted by length)
  genrec (padded)    the same with `model.token_layout=padded` and micro-batches of 16, each padded to
                     its own longest row (what genrec shipped before packed tokens)
  genrec (glibc's default malloc)  the same with GENREC_KEEP_FREED_MEMORY=0 (genrec/allocator.py: freed
                     MB-sized blocks go back to the kernel, and every step faults them in again)
  genrec (reference attention)  the same with `model.kernel=reference` (one masked [B, H, L, L] product)
  genrec (full softmax)  the shipped config with the full-softmax loss, the loss torch-rechub's trainer uses
  genrec (128 sampled)   the shipped config with 128 uniform sampled negatives
  genrec (no micro)  the shipped config with `train.micro_batch_size` = the batch (one pass per step)
  torch-rechub      benchmarks/external/rechub_hstu.py (its HSTUModel and SeqTrainer.train_one_epoch,
                    one sequence per user and epoch, as genrec) with the config's batch size

Reported per row: median (and fastest) seconds per epoch over epochs 2..E (epoch 1 carries one-off
warm-up) of every round (`--rounds N` runs the rows N times, taking turns, so that a machine whose
speed drifts slows every row alike), sequences/s, seconds of one full validation pass, the peak RSS
of the child process and its minor page faults per epoch (the whole run's, start-up and evaluation
included, over its epochs). The machine's 1-minute load average before each row is printed: the
figures mean something only when it is near 0 (nothing else running). The last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_child(command: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """Run a command; return (wall seconds, peak RSS in GB, minor page faults) of that child."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{process.stderr.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024 / 1024, usage.ru_minflt


def genrec_row(label: str, config: str, epochs: int, out: Path, overrides: list[str], env: dict | None = None) -> dict:
    command = [
        sys.executable,
        "-m",
        "genrec",
        "train",
        config,
        "--out",
        str(out),
        "--overwrite",
        "--json",
        "--set",
        f"train.epochs={epochs}",
        "--set",
        "train.patience=null",
        "--set",
        "train.device=cpu",
        *(x for o in overrides for x in ("--set", o)),
    ]
    load = os.getloadavg()[0]
    wall, rss, faults = run_child(command, {**os.environ, **(env or {})})
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    valid = [r for r in records if r["split"] == "valid" and not r.get("final")]
    return {
        "row": label,
        "load_before": load,
        "wall_s": wall,
        "peak_rss_gb": rss,
        "page_faults": faults,
        "epoch_s": [r["seconds"] for r in train],
        "sequences_per_s": [r["sequences_per_s"] for r in train],
        "eval_s": [r["seconds"] for r in valid],
    }


def rechub_row(python: str, folder: Path, epochs: int, batch_size: int, model: object) -> dict:
    """torch-rechub's HSTU at the sizes of genrec's `model` (an HSTUConfig)."""
    sizes = {
        "--max-len": model.max_len,
        "--dim": model.dim,
        "--blocks": model.num_blocks,
        "--heads": model.num_heads,
        "--dqk": model.attention_dim,
        "--dv": model.value_dim,
        "--dropout": model.dropout,
        "--time-buckets": model.time_buckets,
    }
    command = [
        python,
        "benchmarks/external/rechub_hstu.py",
        str(folder),
        *(str(x) for pair in sizes.items() for x in pair),
        "--max-epochs",
        str(epochs),
        "--patience",
        "1000",
        "--max-minutes",
        "1000",
        "--batch-size",
        str(batch_size),
        "--log",
        "speed.json",
    ]
    load = os.getloadavg()[0]
    wall, rss, faults = run_child(command)
    log = json.loads((folder / "speed.json").read_text())
    return {
        "row": "torch-rechub 0.9.0",
        "load_before": load,
        "wall_s": wall,
        "peak_rss_gb": rss,
        "page_faults": faults,
        "epoch_s": [e["train_seconds"] for e in log["epochs"]],
        "sequences_per_s": [e["sequences_per_s"] for e in log["epochs"]],
        "eval_s": [e["valid_eval_seconds"] for e in log["epochs"]],
    }


def merge_rounds(runs: list[dict]) -> dict:
    """One row from its runs in every round: medians over each run's epochs 2..E (epoch 1 carries
    one-off warm-up), the largest peak RSS and load."""
    epochs = [s for r in runs for s in r["epoch_s"][1:] or r["epoch_s"]]
    rates = [s for r in runs for s in r["sequences_per_s"][1:] or r["sequences_per_s"]]
    evals = [s for r in runs for s in r["eval_s"]]
    return {
        "row": runs[0]["row"],
        "runs": runs,
        "median_epoch_s": statistics.median(epochs),
        "fastest_epoch_s": min(epochs),
        "median_sequences_per_s": statistics.median(rates),
        "median_eval_s": statistics.median(evals) if evals else float("nan"),
        "peak_rss_gb": max(r["peak_rss_gb"] for r in runs),
        "page_faults_per_epoch": statistics.median(r["page_faults"] / len(r["epoch_s"]) for r in runs),
        "load_before": max(r["load_before"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ml-100k/hstu.yaml")
    parser.add_argument("--set", action="append", default=[], help="extra overrides for every genrec row")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the rows this many times, taking turns; medians over all"
    )
    parser.add_argument("--rechub-python", default="/work/bench-venvs/rechub/bin/python")
    parser.add_argument("--work", type=Path, default=Path("/tmp/genrec-speed"))
    parser.add_argument("--skip-rechub", action="store_true")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["shipped", "padded", "malloc", "reference", "full", "sampled", "whole", "rechub"],
        help="run these rows only (a row whose overrides leave the shipped config unchanged is skipped anyway)",
    )
    args = parser.parse_args()

    sys.path.insert(0, str(REPO_ROOT))
    from genrec.config import load_config, to_dict

    config = load_config(args.config, args.set)
    batch_size = config.train.batch_size
    folder = args.work / "exchange"
    subprocess.run(
        [
            sys.executable,
            "benchmarks/external/exchange.py",
            "export",
            args.config,
            "--out",
            str(folder),
            *(x for o in args.set for x in ("--set", o)),
        ],
        cwd=REPO_ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    variants = {  # key -> (label, overrides on top of the shipped config)
        "shipped": ("genrec (shipped)", []),
        "padded": ("genrec (padded, micro-batches)", ["model.token_layout=padded", "train.micro_batch_size=16"]),
        "malloc": ("genrec (glibc's default malloc)", []),
        "reference": ("genrec (reference attention)", ["model.kernel=reference"]),
        "full": ("genrec (full softmax)", ["train.loss.name=full"]),
        "sampled": ("genrec (128 sampled)", ["train.loss.name=sampled", "train.loss.num_negatives=128"]),
        "whole": ("genrec (no micro-batches)", [f"train.micro_batch_size={batch_size}"]),
    }
    shipped = to_dict(config)
    runs = []  # (key, label, overrides, env) of every row that runs
    for key, (label, overrides) in variants.items():
        if args.only and key not in args.only:
            continue
        if key not in ("shipped", "malloc") and to_dict(load_config(args.config, [*args.set, *overrides])) == shipped:
            print(f"skipped {label}: the shipped config already has {' '.join(overrides)}")
            continue
        runs.append((key, label, overrides, {"GENREC_KEEP_FREED_MEMORY": "0"} if key == "malloc" else None))
    with_rechub = not args.skip_rechub and (not args.only or "rechub" in args.only)
    rounds: list[list[dict]] = []  # rounds[i]: one row per run; rows take turns, so drift hits every row alike
    for _ in range(args.rounds):
        rows = [
            genrec_row(label, args.config, args.epochs, args.work / key, [*args.set, *overrides], env)
            for key, label, overrides, env in runs
        ]
        if with_rechub:
            rows.append(rechub_row(args.rechub_python, folder, args.epochs, batch_size, config.model))
        rounds.append(rows)
    rows = [merge_rounds(list(same)) for same in zip(*rounds)]
    print(
        f"{args.config} {' '.join(args.set)}, batch {batch_size}, {args.epochs} epochs per row and round, "
        f"{args.rounds} round(s), {os.cpu_count()} CPUs"
    )
    print(
        f"{'':<32} {'s/epoch':>8} {'fastest':>8} {'seq/s':>8} {'eval s':>7} {'peak RSS':>9} {'faults/epoch':>12} "
        f"{'load':>5}"
    )
    for r in rows:
        print(
            f"{r['row']:<32} {r['median_epoch_s']:>8.2f} {r['fastest_epoch_s']:>8.2f} {r['median_sequences_per_s']:>8.0f} "
            f"{r['median_eval_s']:>7.2f} {r['peak_rss_gb']:>7.2f} GB {r['page_faults_per_epoch']:>12,.0f} "
            f"{r['load_before']:>5.2f}"
        )
    print(json.dumps({"benchmark": "hstu_speed", "config": args.config, "epochs": args.epochs, "rows": rows}))


if __name__ == "__main__":
    main()
