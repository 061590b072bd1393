"""Time to quality: the wall time each library's run needed to reach its own best validation NDCG@10.

    python benchmarks/time_to_quality.py \
        "genrec HSTU=runs/final/ml-100k-tuned/ml-100k__hstu-tuned" \
        "RecBole SASRec=benchmarks/external/recbole_results/ml-100k-len50/recbole_sasrec.json" \
        "RecTools SASRec=benchmarks/external/rectools_results/ml-100k/rectools_sasrec-s0.json" \
        "torch-rechub HSTU=benchmarks/external/rechub_results/ml-100k/rechub_hstu.json"

Each argument is LABEL=PATH[,PATH...] (the runs of one row, e.g. its seeds), where a PATH is
- a genrec run directory (its `metrics.jsonl`), or a folder of them (`seed-*/`: one row per seed, then
  their mean): time = the training and validation seconds logged up to the best validation epoch;
- a peer's result file written by `benchmarks/external/` (RecBole `recbole_sasrec.json`, RecTools
  `rectools_*.json`, torch-rechub `rechub_hstu.json`): the same sum from its per-epoch history.
The best epoch is the first with the run's highest validation NDCG@10 as each library measured it
during training (RecBole's own figure is unmasked); the valid and test columns are genrec's
evaluator on the selected model. Seconds are what the
run logged, on whatever the machine was doing then: compare rows measured under the same load.
Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Curve:
    """One run: per-epoch seconds (training + validation) and validation NDCG@10, epoch order."""

    seconds: list[float]
    valid_ndcg: list[float]  # as the library measured it while training (what chose its best epoch)
    test_ndcg: float | None  # genrec's evaluator on the selected model
    selected_valid_ndcg: float | None  # the same evaluator on validation

    @property
    def best_epoch(self) -> int:
        """1-based epoch of the first best validation NDCG@10."""
        return self.valid_ndcg.index(max(self.valid_ndcg)) + 1

    @property
    def seconds_to_best(self) -> float:
        return sum(self.seconds[: self.best_epoch])


def genrec_curve(run_dir: Path) -> Curve:
    """A genrec run: `metrics.jsonl` has one train record per epoch and a valid record per evaluation
    (every `train.eval_every` epochs); an epoch's seconds are its training plus its evaluation."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds: dict[int, float] = {}
    valid: dict[int, float] = {}
    for record in records:
        epoch = record.get("epoch")
        if epoch is None or record.get("split") not in ("train", "valid"):
            continue
        seconds[epoch] = seconds.get(epoch, 0.0) + record.get("seconds", 0.0)
        if record["split"] == "valid":
            valid[epoch] = record["ndcg@10"]
    epochs = sorted(seconds)
    # epochs without an evaluation cannot be the best: give them -inf, keep their seconds
    curve = [valid.get(e, float("-inf")) for e in epochs]
    metrics = run_dir / "metrics.json"
    test = json.loads(metrics.read_text())["test"]["ndcg@10"] if metrics.is_file() else None
    return Curve([seconds[e] for e in epochs], curve, test, max(curve))


def peer_curve(path: Path) -> Curve:
    """A peer's result JSON from `benchmarks/external/`."""
    result = json.loads(path.read_text())

    def genrec_metric(which: str) -> float | None:  # RecBole's files keep masked and unmasked figures
        found = result.get(f"genrec_{which}", result.get(f"local_{which}", {}))
        return found.get("masked", found).get("ndcg@10") if found else None

    test, valid = genrec_metric("test"), genrec_metric("valid")
    if "history" in result:  # RecBole: train_s / valid_s / valid.ndcg@10 per epoch
        rows = result["history"]
        seconds = [r["train_s"] + r["valid_s"] for r in rows]
        return Curve(seconds, [r["valid"]["ndcg@10"] for r in rows], test, valid)
    rows = result["epochs"]  # RecTools, torch-rechub
    seconds = [
        r["train_seconds"] + r.get("valid_seconds", r.get("valid_eval_seconds", r.get("valid_score_seconds", 0.0)))
        for r in rows
    ]
    return Curve(seconds, [r["valid_ndcg@10"] for r in rows], test, valid)


def curves(path: Path) -> list[Curve]:
    if path.is_file():
        return [peer_curve(path)]
    if (path / "metrics.jsonl").is_file():
        return [genrec_curve(path)]
    runs = sorted(p for p in path.glob("seed-*") if (p / "metrics.jsonl").is_file())
    if not runs:
        raise SystemExit(f"{path}: neither a result JSON, a genrec run directory nor a folder of seed-*/ runs")
    return [genrec_curve(p) for p in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="LABEL=PATH[,PATH...]")
    args = parser.parse_args()
    print("| run | seeds | best epoch | seconds to best | s / epoch | valid NDCG@10 | test NDCG@10 |")
    print("|---|---|---|---:|---:|---|---|")
    for spec in args.runs:
        label, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"expected LABEL=PATH, got {spec!r}")
        found = [curve for part in path.split(",") for curve in curves(Path(part))]
        tests = [c.test_ndcg for c in found if c.test_ndcg is not None]
        test = f"{statistics.fmean(tests):.4f}" if tests else "-"
        valids = [c.selected_valid_ndcg for c in found if c.selected_valid_ndcg is not None]
        valid = f"{statistics.fmean(valids):.4f}" if valids else "-"
        print(
            f"| {label} | {len(found)} | {', '.join(str(c.best_epoch) for c in found)} "
            f"| {statistics.fmean(c.seconds_to_best for c in found):.0f} "
            f"| {statistics.fmean(statistics.median(c.seconds) for c in found):.1f} "
            f"| {valid} | {test} |"
        )


if __name__ == "__main__":
    main()
