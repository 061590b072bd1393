"""Two or more variants of a recipe timed in one process, an epoch of each in turn.

    python benchmarks/ab_epochs.py configs/ml-100k/hstu.yaml \
        --variant "chunked: model.kernel=chunked" --variant "reference: model.kernel=reference" \
        [--rounds 6] [--set train.windows=latest] [--threads 2]

On a machine whose speed drifts (this one: ±15-20% in phases of tens of seconds, BENCHMARKS "HSTU
training speed"), timing the variants in separate runs one after the other compares the phases as
much as the code. Here every variant gets a trainer of its own in the same process, and the rounds
alternate one epoch of each (in a rotating order), so a slow phase hits them alike; the figure that
matters is each round's ratio to the first variant, whose median is printed with its range.
Variants are overrides of the config (`--set` syntax, comma-separated). A variant named
`name@PATH` runs the code of another checkout (e.g. `git worktree add /tmp/before HEAD~1`) in a
worker process of its own, which trains its epoch when the round reaches it and waits otherwise, so
code changes are compared in alternation too (one process trains at a time: nothing shares the cores).
A process-wide setting (the allocator, threads) needs `hstu_speed.py`. The genrec command's allocator
setting (`genrec/allocator.py`) is on, as in training.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if "--worker" in sys.argv:  # the code of the checkout given as --root, ahead of an installed genrec
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--root") + 1]).resolve()))
elif str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


REPLY = "ab_epochs worker: "  # how a worker's replies start on its stdout


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'name: a.b=1, c=2' -> ('name', ['a.b=1', 'c=2']); 'name:' alone is the config as it is."""
    name, _, overrides = text.partition(":")
    if not name.strip():
        raise SystemExit(f"--variant needs a name before ':', got {text!r}")
    return name.strip(), [o.strip() for o in overrides.split(",") if o.strip()]


def warm_trainer(config: str, overrides: list[str]):  # noqa: ANN201 - a genrec Trainer
    """A trainer of `config` with `overrides`, after one warm-up epoch (first allocations, lazy imports)."""
    from genrec.config import load_config
    from genrec.runner import trainer_without_run_dir

    trainer = trainer_without_run_dir(load_config(config, [*overrides, "train.device=cpu"]))
    trainer.train_epoch(1, batches=trainer.objective.batches(1))
    return trainer


def timed_epoch(trainer, epoch: int) -> float:  # noqa: ANN001
    """Seconds of one whole training epoch (collation included)."""
    started = time.perf_counter()
    trainer.train_epoch(epoch, batches=trainer.objective.batches(epoch))
    return time.perf_counter() - started


class Worker:
    """A variant trained in a child process running another checkout's code: one epoch per request."""

    def __init__(self, root: str, config: str, overrides: list[str], threads: int) -> None:
        command = [sys.executable, __file__, "--worker", "--root", root, "--threads", str(threads), config]
        command += [f"--set={o}" for o in overrides]
        self.child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.answer() != "ready":
            raise SystemExit(f"the worker for {root} did not start (its error is above)")

    def answer(self) -> str:
        """The worker's next reply (lines it prints otherwise are passed through)."""
        for line in self.child.stdout:
            if line.startswith(REPLY):
                return line[len(REPLY) :].strip()
            print(line, end="")
        return ""

    def epoch(self, epoch: int) -> float:
        self.child.stdin.write(f"{epoch}\n")
        self.child.stdin.flush()
        return float(self.answer())

    def close(self) -> None:
        self.child.stdin.close()
        self.child.wait()


class InProcess:
    """A variant trained in this process."""

    def __init__(self, config: str, overrides: list[str]) -> None:
        self.trainer = warm_trainer(config, overrides)

    def epoch(self, epoch: int) -> float:
        return timed_epoch(self.trainer, epoch)

    def close(self) -> None:
        pass


def serve_worker(args: argparse.Namespace) -> None:
    """Worker mode: build the trainer, say "ready", then train one epoch per line read, answering its seconds."""
    trainer = warm_trainer(args.config, args.set)
    print(f"{REPLY}ready", flush=True)
    for line in sys.stdin:
        print(f"{REPLY}{timed_epoch(trainer, int(line))}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--variant", action="append", default=[], help="'name[@PATH]: key=value, ...' (two or more)")
    parser.add_argument("--set", action="append", default=[], help="override for every variant")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    from genrec.allocator import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(args.threads)
    if args.worker:
        serve_worker(args)
        return
    variants = [parse_variant(v) for v in args.variant]
    if len(variants) < 2:
        raise SystemExit("give two or more --variant")
    runners = []
    for name, overrides in variants:
        label, _, root = name.partition("@")
        if root and not (Path(root) / "genrec").is_dir():
            raise SystemExit(f"variant {name!r}: {root} is not a genrec checkout (no genrec/ in it)")
        overrides = [*args.set, *overrides]
        runner = Worker(root, args.config, overrides, args.threads) if root else InProcess(args.config, overrides)
        runners.append((name, runner))

    seconds: dict[str, list[float]] = {name: [] for name, _ in variants}
    for round_ in range(args.rounds):
        shift = round_ % len(runners)  # rotate who goes first: no variant always follows the same one
        for name, runner in runners[shift:] + runners[:shift]:
            seconds[name].append(runner.epoch(round_ + 2))
    for _, runner in runners:
        runner.close()

    first = variants[0][0]
    print(
        f"{args.config} {' '.join(args.set)}; {args.rounds} rounds, {args.threads} threads; ratio = variant / {first}"
    )
    print(f"{'variant':<24} {'median s/epoch':>15} {'fastest':>8} {'ratio (median)':>15} {'ratio range':>15}")
    for name, times in seconds.items():
        ratios = [t / b for t, b in zip(times, seconds[first])]
        print(
            f"{name:<24} {statistics.median(times):>15.3f} {min(times):>8.3f} {statistics.median(ratios):>15.3f} "
            f"{min(ratios):>7.3f}-{max(ratios):.3f}"
        )


if __name__ == "__main__":
    main()
