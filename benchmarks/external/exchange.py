"""The file exchange between genrec and other libraries' models in the side-by-side benchmarks.

Other libraries (torch-rechub, RecBole) live in their own virtualenvs with their own pinned torch,
so they never import genrec. genrec writes the split it evaluates on as plain numpy files; the other
library trains on `train`, writes one full score row per evaluation case, and genrec's evaluator
ranks those rows exactly as it ranks its own models (same history masking, same tie rule).

    python benchmarks/external/exchange.py export CONFIG --out DIR [--set KEY=VALUE ...]
    python benchmarks/external/exchange.py evaluate DIR --scores DIR/scores_test.npy --which test [--json]

Files written by `export` (indices as in the canonical dataset: items 1..N, 0 = padding; users 1..M):

    meta.json          num_items, num_users, protocol, dataset path, config name
    sequences.npz      items [E], timestamps [E], offsets [M+2]: every user's full sequence in time order
    train.npz          items, timestamps, offsets: the training events only (same layout)
    valid.npz, test.npz  users [C], targets [C], history_start [C], history_end [C], target_timestamps [C]:
                       the history of case c is sequences.items[history_start[c]:history_end[c]]

`scores_<which>.npy` is float32 [C, N+1], row c scoring every item for case c of `<which>.npz`
(column 0 = padding, ignored). Rows must be in the order of the cases file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

CASE_FIELDS = ("users", "targets", "history_start", "history_end", "target_timestamps")


def export(config_path: str, out: Path, overrides: list[str]) -> None:
    from genrec.config import load_config
    from genrec.runner import dataset_for, split_for

    config = load_config(config_path, overrides)
    dataset = dataset_for(config.data)
    split = split_for(dataset, config)
    out.mkdir(parents=True, exist_ok=True)
    for name, seqs in (("sequences", split.sequences), ("train", split.train)):
        np.savez(out / f"{name}.npz", items=seqs.items, timestamps=seqs.timestamps, offsets=seqs.offsets)
    for which in ("valid", "test"):
        cases = split.cases(which)
        np.savez(out / f"{which}.npz", **{f: getattr(cases, f) for f in CASE_FIELDS})
    meta = {
        "num_items": dataset.num_items,
        "num_users": dataset.num_users,
        "protocol": split.protocol,
        "dataset": str(dataset.path),
        "config": config.name,
        "max_len": getattr(config.model, "max_len", None),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    print(json.dumps(meta))


def evaluate_scores(folder: Path, scores_path: Path, which: str, ks: list[int]) -> dict[str, float]:
    import torch

    from genrec.data.dataset import Sequences
    from genrec.data.splits import EvalCases
    from genrec.eval.evaluator import evaluate

    meta = json.loads((folder / "meta.json").read_text())
    seq = np.load(folder / "sequences.npz")
    sequences = Sequences(seq["items"], seq["timestamps"], seq["offsets"])
    c = np.load(folder / f"{which}.npz")
    cases = EvalCases(*(c[f] for f in CASE_FIELDS))
    scores = torch.from_numpy(np.load(scores_path).astype(np.float32))
    if scores.shape != (len(cases), meta["num_items"] + 1):
        raise SystemExit(
            f"{scores_path}: shape {tuple(scores.shape)}, expected ({len(cases)}, {meta['num_items'] + 1})"
        )
    row_of_user = {int(u): i for i, u in enumerate(cases.users)}

    def precomputed(batch):  # rows in case order: look them up by user (one case per user in these splits)
        return scores[[row_of_user[int(u)] for u in batch.users]]

    return evaluate(precomputed, sequences, cases, meta["num_items"], ks=ks, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    ex = commands.add_parser("export")
    ex.add_argument("config")
    ex.add_argument("--out", required=True, type=Path)
    ex.add_argument("--set", action="append", default=[])
    ev = commands.add_parser("evaluate")
    ev.add_argument("folder", type=Path)
    ev.add_argument("--scores", required=True, type=Path)
    ev.add_argument("--which", default="test", choices=["valid", "test"])
    ev.add_argument("--ks", default="1,5,10,50,200")
    ev.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.command == "export":
        export(args.config, args.out, args.set)
        return
    metrics = evaluate_scores(args.folder, args.scores, args.which, [int(k) for k in args.ks.split(",")])
    print(json.dumps(metrics) if args.json else "\n".join(f"{k:>10}: {v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
