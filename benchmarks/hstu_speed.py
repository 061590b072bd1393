"""Training speed and memory of genrec's HSTU against torch-rechub 0.9.0's HSTU, in one run.

    python benchmarks/hstu_speed.py [--config configs/ml-100k/hstu.yaml] [--epochs 4] \
        [--rechub-python /work/bench-venvs/rechub/bin/python] [--work /tmp/genrec-speed]

Same data (the config's leave-one-out split, exported with benchmarks/external/exchange.py), same
model sizes (the config's; torch-rechub's script takes the same values), same machine, one after
the other, each in a fresh child process:

  genrec (sampled)  `genrec train CONFIG` as shipped: 128 sampled negatives, micro-batches of 16 on CPU
                    (rows sorted by length, each micro-batch padded to its own longest row)
  genrec (full)     the same with the full-softmax loss, the loss torch-rechub's trainer uses
  genrec (no micro) the shipped config with `train.micro_batch_size` = the batch (one pass per step)
  torch-rechub      benchmarks/external/rechub_hstu.py (its HSTUModel and SeqTrainer.train_one_epoch,
                    one sequence per user and epoch, as genrec) with the config's batch size

Reported per row: median seconds per epoch over epochs 2..E (epoch 1 carries one-off warm-up),
sequences/s, seconds of one full validation pass, and the peak RSS of the child process. The
machine's 1-minute load average before each row is printed: the figures mean something only when
it is near 0 (nothing else running). The last line is one JSON object.
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


def run_child(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in GB of that child)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{process.stderr.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024 / 1024


def genrec_row(label: str, config: str, epochs: int, out: Path, overrides: list[str]) -> dict:
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
    wall, rss = run_child(command)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    valid = [r for r in records if r["split"] == "valid" and not r.get("final")]
    return {
        "row": label,
        "load_before": load,
        "wall_s": wall,
        "peak_rss_gb": rss,
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
    wall, rss = run_child(command)
    log = json.loads((folder / "speed.json").read_text())
    return {
        "row": "torch-rechub 0.9.0",
        "load_before": load,
        "wall_s": wall,
        "peak_rss_gb": rss,
        "epoch_s": [e["train_seconds"] for e in log["epochs"]],
        "sequences_per_s": [e["sequences_per_s"] for e in log["epochs"]],
        "eval_s": [e["valid_eval_seconds"] for e in log["epochs"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ml-100k/hstu.yaml")
    parser.add_argument("--set", action="append", default=[], help="extra overrides for every genrec row")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rechub-python", default="/work/bench-venvs/rechub/bin/python")
    parser.add_argument("--work", type=Path, default=Path("/tmp/genrec-speed"))
    parser.add_argument("--skip-rechub", action="store_true")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO_ROOT))
    from genrec.config import load_config

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
    rows = [
        genrec_row("genrec (sampled, shipped)", args.config, args.epochs, args.work / "sampled", args.set),
        genrec_row(
            "genrec (full softmax)", args.config, args.epochs, args.work / "full", [*args.set, "train.loss.name=full"]
        ),
        genrec_row(
            "genrec (no micro-batches)",
            args.config,
            args.epochs,
            args.work / "whole",
            [*args.set, f"train.micro_batch_size={batch_size}"],
        ),
    ]
    if not args.skip_rechub:
        rows.append(rechub_row(args.rechub_python, folder, args.epochs, batch_size, config.model))
    print(
        f"{args.config} {' '.join(args.set)}, batch {batch_size}, {args.epochs} epochs per row, {os.cpu_count()} CPUs"
    )
    print(f"{'':<28} {'s/epoch':>8} {'seq/s':>8} {'eval s':>7} {'peak RSS':>9} {'load':>5}")
    for r in rows:
        r["median_epoch_s"] = statistics.median(r["epoch_s"][1:] or r["epoch_s"])
        r["median_sequences_per_s"] = statistics.median(r["sequences_per_s"][1:] or r["sequences_per_s"])
        r["median_eval_s"] = statistics.median(r["eval_s"]) if r["eval_s"] else float("nan")
        print(
            f"{r['row']:<28} {r['median_epoch_s']:>8.2f} {r['median_sequences_per_s']:>8.0f} "
            f"{r['median_eval_s']:>7.2f} {r['peak_rss_gb']:>7.2f} GB {r['load_before']:>5.2f}"
        )
    print(json.dumps({"benchmark": "hstu_speed", "config": args.config, "epochs": args.epochs, "rows": rows}))


if __name__ == "__main__":
    main()
