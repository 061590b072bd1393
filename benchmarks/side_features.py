"""Side features in the ID models: ids only, ids + features, features only; overall, cold and new items.

    python benchmarks/side_features.py ml-100k/hstu --features genres year --seeds 0 1 2 \
        --set train.epochs=30 --out runs/side-features

For each variant and seed (each run a `genrec train` child process, reused when its run directory is
complete, as `seed_sweep.py` does):
- leave-one-out: test HR@10 / NDCG@10 over every user, NDCG@10 of the cases whose target has at most
  `--cold` training events (`genrec eval RUN --cold N`), and the seconds per training epoch;
- the new-item protocol (`split.protocol=new-items`: a time split keeping only targets whose item
  never occurs in training): test HR@50 and NDCG@10, beside a random ranking's HR@50 (50 / the
  number of items a case ranks, averaged over the cases).
Prints one Markdown table, mean ± standard error over the seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from seed_sweep import mean_and_stderr, train

# "ids + features, unseen by features": items with no training event get no (untrained) id vector
# "... id dropout": the id vector is also dropped at random in training, so features alone are learned
# "... + user features": the users' features as prefix tokens before the history (--user-features)
VARIANTS = (
    "ids",
    "ids + features",
    "ids + features, unseen by features",
    "ids + features, unseen by features, id dropout",
    "features only",
    "ids + features + user features",
)


def variant_sets(variant: str, features: list[str], user_features: list[str] | None = None) -> list[str]:
    if variant == "ids":
        return []
    sets = [f"model.item_features=[{', '.join(features)}]"]
    if variant == "features only":
        return [*sets, "model.item_id=false"]
    if variant.endswith("user features"):
        if not user_features:
            raise SystemExit(f"variant {variant!r} needs --user-features")
        return [*sets, f"model.user_features=[{', '.join(user_features)}]"]
    if "unseen by features" in variant:
        sets.append("model.id_min_count=1")
    return [*sets, "model.id_dropout=0.3"] if variant.endswith("id dropout") else sets


def cold_metrics(run_dir: Path, cold: int, threads: int | None = None) -> dict:
    done = run_dir / f"cold-{cold}.json"
    if not done.is_file():
        command = [sys.executable, "-m", "genrec", "eval", str(run_dir), "--cold", str(cold), "--json", "-q"]
        command += ["--threads", str(threads)] if threads else []
        done.write_text(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return json.loads(done.read_text())


def seconds_per_epoch(run_dir: Path) -> float:
    """The median of the run's epoch times (a median: an epoch slowed by a burst of other work on the
    machine does not move it)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["seconds"] for r in records if r.get("split") == "train" and "seconds" in r]
    return statistics.median(seconds) if seconds else float("nan")


def random_hr50(run_dir: Path, new_items_only: bool = False) -> float:
    """A random ranking's expected HR@50 on the run's test cases (`new_items_only`: those whose target
    never occurs in training): 50 / (items ranked), averaged. The items ranked are the catalogue minus
    the history (masked), so this reads the split."""
    from genrec.config import load_config
    from genrec.run_dir import RunDir
    from genrec.runner import dataset_of_run, split_for

    config = load_config(run_dir / "config.json")
    dataset = dataset_of_run(RunDir.open(run_dir), config)
    split = split_for(dataset, config)
    cases = split.new_item_cases("test") if new_items_only else split.cases("test")
    ranked = dataset.num_items - (cases.history_end - cases.history_start)
    return float((50 / ranked.clip(min=50)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--features", nargs="+", required=True, help="item features, e.g. genres year")
    parser.add_argument("--user-features", nargs="+", help="user features of the user-feature variant")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS[:5], metavar="VARIANT")
    parser.add_argument(
        "--new-items",
        choices=["protocol", "held-out", "none"],
        default="protocol",
        help="protocol: train again under split.protocol=new-items (needs timestamps); held-out: the test "
        "cases of the leave-one-out (or predefined) runs whose target never occurs in training "
        "(genrec eval RUN --new-items); none: no new-item columns",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cold", type=int, default=5, help="cold items: at most this many training events")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()

    rows = []
    for variant in args.variants:
        sets = [*args.set, *variant_sets(variant, args.features, args.user_features)]
        name = f"{args.recipe}-{variant.replace(' + ', '-').replace(', ', '-').replace(' ', '-')}"
        overall, new, cold, epoch_s, random = [], [], [], [], []
        for seed in args.seeds:
            loo = train(args.recipe, seed, sets, args.out / "leave-one-out" / name, args.threads)
            run_dir = args.out / "leave-one-out" / name / args.recipe.replace("/", "__") / f"seed-{seed}"
            overall.append(loo["test"])
            cold.append(cold_metrics(run_dir, args.cold, args.threads))
            epoch_s.append(seconds_per_epoch(run_dir))
            if args.new_items == "none":
                continue
            if args.new_items == "held-out":
                new.append(cold_metrics(run_dir, 0, args.threads))
                random.append(random_hr50(run_dir, new_items_only=True))
                continue
            sets_new = [*sets, "split.protocol=new-items", "train.metric=hr@50"]
            new_dir = args.out / "new-items" / name
            new.append(train(args.recipe, seed, sets_new, new_dir, args.threads)["test"])
            random.append(random_hr50(new_dir / args.recipe.replace("/", "__") / f"seed-{seed}"))

        def cell(values: list[float]) -> str:
            mean, err = mean_and_stderr(values)
            return f"{mean:.4f}" + ("" if err != err else f" ± {err:.4f}")

        rows.append(
            [
                variant,
                cell([m["hr@10"] for m in overall]),
                cell([m["ndcg@10"] for m in overall]),
                f"{cell([m['ndcg@10'] for m in cold])} ({cold[0]['num_users']})",
                f"{cell([m['hr@50'] for m in new])} ({new[0]['num_users']})" if new else "-",
                cell([m["ndcg@10"] for m in new]) if new else "-",
                f"{sum(random) / len(random):.4f}" if random else "-",
                f"{sum(epoch_s) / len(epoch_s):.1f}",
            ]
        )
    head = [
        "variant",
        "HR@10",
        "NDCG@10",
        f"cold (<= {args.cold}) NDCG@10 (cases)",
        "new-item HR@50 (cases)",
        "new-item NDCG@10",
        "random HR@50",
        "s / epoch",
    ]
    print(f"{args.recipe}, seeds {args.seeds}, features {args.features}, sets {args.set}")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
