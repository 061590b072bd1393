"""Late-fusion ranking from stored tables, as the HLLM deployment serves it: the user vectors are
computed ahead (refreshed, say, daily), the item vectors when an item is created, and a request runs
only the ranker's MLP heads over (user vector, candidate vector) pairs.

`export_ranker_tables` writes, for a late-fusion ranker run (`genrec export RUN --users`):

    user_vectors.npy   float32 [U, D]; row r is user index r + 1: the backbone's user vector after the
                       user's whole history, at the time of its last event
    user_ids.json      [U] raw user ids, aligned with the rows
    item_vectors.npy   float32 [N, D]; row r is item index r + 1: the backbone's item vectors
    item_ids.json      [N] raw item ids
    heads.npz          the heads' MLP weights (numpy arrays, read without pickle)
    export.json        what was exported: run, dimension, the tasks and the heads' layout

`StoredLateFusion.load(folder)` ranks candidates from those files with the MLP alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from genrec.checkpoints import BEST_CHECKPOINT
from genrec.data.dataset import Sequences
from genrec.errors import ConfigError, DataError
from genrec.eval.evaluator import EvalBatch, padded_histories
from genrec.io import atomic_output_dir, check_output_not_input
from genrec.models.base import SequentialScorer
from genrec.models.ranking import LateFusionRanker, heads_mlp, pair_features
from genrec.run_dir import RUN_FILES, RunDir

USER_VECTORS = "user_vectors.npy"
USER_IDS = "user_ids.json"
ITEM_VECTORS = "item_vectors.npy"
ITEM_IDS = "item_ids.json"
HEADS = "heads.npz"
SUMMARY = "export.json"


@torch.no_grad()
def user_vectors(
    scorer: SequentialScorer, sequences: Sequences, users: np.ndarray, batch_size: int = 256
) -> torch.Tensor:
    """[B, D] the user vector of each of `users` [B] (dataset indices) after their whole history in
    `sequences`, at the time of their last event (what `Recommender.recommend_users` reads)."""
    out = []
    for begin in range(0, len(users), batch_size):
        rows = users[begin : begin + batch_size]
        starts, ends = sequences.offsets[rows], sequences.offsets[rows + 1]
        items, times, lengths = padded_histories(sequences, starts, ends)
        last = times[np.arange(len(rows)), np.maximum(lengths - 1, 0)]
        batch = EvalBatch(*(torch.from_numpy(a) for a in (rows.astype(np.int64), items, times, lengths, last)))
        out.append(scorer.user_vectors(batch).float().cpu())
    return torch.cat(out)


def export_ranker_tables(run_dir: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write the stored tables of the late-fusion ranker run `run_dir` (module docstring); returns the folder."""
    from genrec.ranking_run import load_ranker
    from genrec.runner import dataset_of_run

    run = RunDir.open(run_dir)
    config = run.config()
    if config.model.name != "ranker" or getattr(config.model, "fusion", None) != "late":
        fusion = getattr(config.model, "fusion", None)
        raise ConfigError(
            f"genrec export --users writes the tables of a late-fusion ranker run; {run.path} is "
            + (f"a fusion={fusion} ranker" if fusion else f"a {config.model.name} run")
            + (
                " (early fusion reads the candidate inside the sequence, so nothing per user can be stored)"
                if fusion == "early"
                else ""
            )
        )
    if not (run.path / BEST_CHECKPOINT).is_file():
        raise ConfigError(f"{run.path} has no {BEST_CHECKPOINT}: train the run first (genrec train)")
    dataset = dataset_of_run(run, config, download=False)
    out = Path(out) if out is not None else run.path / "export-users"
    check_output_not_input(out, {**{f"run's {name}": run.path / name for name in RUN_FILES}, "dataset": dataset.path})
    ranker = load_ranker(dataset, config, run.path)
    assert isinstance(ranker, LateFusionRanker)
    scorer = ranker.backbone.scorer()
    assert isinstance(scorer, SequentialScorer)
    users = user_vectors(scorer, dataset.sequences, np.arange(1, dataset.num_users + 1)).numpy()
    items = scorer.item_table[1:].float().cpu().numpy()
    heads = {key: value.detach().cpu().numpy() for key, value in ranker.heads.state_dict().items()}
    with atomic_output_dir(out, overwrite) as tmp:
        np.save(tmp / USER_VECTORS, users)
        np.save(tmp / ITEM_VECTORS, items)
        (tmp / USER_IDS).write_text(json.dumps(dataset.user_raw_ids()[1:]))
        (tmp / ITEM_IDS).write_text(json.dumps(dataset.item_raw_ids()[1:]))
        np.savez(tmp / HEADS, **heads)
        summary = {
            "run_dir": str(run.path),
            "model": "ranker",
            "fusion": "late",
            "num_users": int(users.shape[0]),
            "num_items": int(items.shape[0]),
            "dim": int(items.shape[1]),
            "hidden": ranker.config.hidden,
            "tasks": [{"name": t.name, "kind": t.kind} for t in ranker.config.tasks],
            "files": [USER_VECTORS, USER_IDS, ITEM_VECTORS, ITEM_IDS, HEADS],
        }
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2))
    return out


class StoredLateFusion:
    """A late-fusion ranker served from `export_ranker_tables`'s files: MLP heads over stored vectors.

    users: [U+1, D] (row 0 unused), items: [N+1, D] (row 0 padding), heads: [..., 3D] -> [..., T].
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, heads: torch.nn.Module, tasks: list[dict]) -> None:
        self.users, self.items, self.heads, self.tasks = users, items, heads.eval(), tasks

    @classmethod
    def load(cls, folder: str | Path) -> StoredLateFusion:
        folder = Path(folder)
        if not (folder / SUMMARY).is_file():
            raise DataError(f"{folder} holds no {SUMMARY}: write it with genrec export RANKER_RUN --users")
        summary = json.loads((folder / SUMMARY).read_text())
        if summary.get("fusion") != "late":
            raise DataError(f"{folder} is no late-fusion ranker export (genrec export RANKER_RUN --users)")
        users, items = (np.load(folder / name, allow_pickle=False) for name in (USER_VECTORS, ITEM_VECTORS))
        pad = lambda m: torch.from_numpy(np.concatenate([np.zeros((1, m.shape[1]), m.dtype), m]))  # noqa: E731
        heads = heads_mlp(3 * summary["dim"], summary["hidden"], len(summary["tasks"]))
        with np.load(folder / HEADS, allow_pickle=False) as stored:
            heads.load_state_dict({key: torch.from_numpy(stored[key]) for key in stored.files})
        return cls(pad(users), pad(items), heads, summary["tasks"])

    @torch.no_grad()
    def __call__(self, users: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """users [B] dataset user indices, candidates [B, C] item indices -> [B, C, T] the heads' logits."""
        if int(users.min()) < 1 or int(users.max()) >= len(self.users):
            raise DataError(f"user indices must be in 1..{len(self.users) - 1}")
        if int(candidates.min()) < 1 or int(candidates.max()) >= len(self.items):
            raise DataError(f"candidate item indices must be in 1..{len(self.items) - 1}")
        return self.heads(pair_features(self.users[users], self.items[candidates]))
