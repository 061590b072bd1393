"""RecTools 0.19.0's SASRec, HSTU and eSASRec, trained on a genrec exchange folder, scored for genrec's evaluator.

Runs in its own virtualenv (torch + rectools[torch], never genrec); imports only torch, numpy,
pandas, pytorch_lightning and rectools (plus the standard library and peer_eval.py next to it).
See benchmarks/external/exchange.py for the folder layout and README_rectools.md for the commands,
the numbers and every difference of recipe.

    /work/bench-venvs/rectools/bin/python benchmarks/external/rectools_models.py DIR --model sasrec|hstu|esasrec \
        [--seed 0] [--max-minutes 60] [--genrec-python /work/venv/bin/python]

What it does
------------
* Data: the training events of `train.npz` become RecTools' interactions (user = genrec user index,
  item = genrec item index, weight 1, datetime = the event's unix time), in each user's sequence
  order; RecTools sorts them by datetime with a stable sort, so genrec's order of same-second events
  is kept. RecTools' own data preparator then keeps each user's latest `max_len + 1` events (one
  training sequence per user) and numbers the items it saw (id 0 = its padding token).
* Model: `SASRecModel` (softmax loss over the catalogue), `HSTUModel` (the configuration of RecTools'
  HSTU tutorial: sampled softmax, 128 uniform negatives, logits / 0.05, cosine similarity, relative
  position and time attention bias) or eSASRec (`SASRecModel` with `LiGRLayers` and the sampled
  softmax loss with many negatives, the recipe of "eSASRec", RecSys'25), trained by RecTools' own
  Lightning module (`model.fit`), Adam with RecTools' betas (0.9, 0.98).
* Selection: a Lightning callback (as in RecTools' HSTU tutorial, which checkpoints on a validation
  metric and stops early) scores genrec's validation cases after every epoch and computes NDCG@10 with
  genrec's rule (history masked, ties pessimistic); the best epoch's weights are restored, training
  stops after `--patience` epochs without improvement, at `--max-epochs`, or at `--max-minutes`.
  Test is never looked at before the end.
* Scores: for case c the history is exactly sequences.items[history_start[c]:history_end[c]] (with
  timestamps); items RecTools never saw in training are dropped from it as RecTools' own `recommend`
  does, the rest mapped to RecTools' ids, and the batch is built by RecTools' own recommend collate
  function (latest `max_len` items, left padding; for HSTU the target's time is the context time).
  Row c = the similarity of the last position's session vector with every item vector (RecTools'
  similarity module: dot for SASRec/eSASRec, cosine for HSTU), columns put back in genrec's item
  order through RecTools' item id map; items RecTools never saw get -1e30 (never ranked above a
  seen item); column 0 = -1e30.
* Checks (the run aborts if one fails): RecTools' training sequences equal each user's latest
  `max_len + 1` events of train.npz; for the first 64 valid and test cases the top-20 of RecTools'
  public `model.recommend` (its own dataset path, ids and, for HSTU, context) equal the exported
  rows' top-20 items with the same scores; and the mean exported score of an item correlates
  positively with its training popularity (recorded, a sanity figure).

Outputs (in the exchange folder): scores_valid.npy, scores_test.npy (float32 [C, N+1], best epoch) and
rectools_<model>.json (settings, versions, per epoch: train seconds, loss, valid NDCG@10; best epoch,
checks, peak RSS, and genrec's metrics when --genrec-python is given).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from rectools import Columns  # noqa: E402
from rectools.dataset import Dataset  # noqa: E402
from rectools.models import HSTUModel, SASRecModel  # noqa: E402
from rectools.models.nn.item_net import IdEmbeddingsItemNet  # noqa: E402
from rectools.models.nn.transformers.ligr import LiGRLayers  # noqa: E402
from rectools.models.nn.transformers.sasrec import SASRecDataPreparator  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_eval import add_common_args, genrec_evaluate, load_exchange, quick_ndcg10  # noqa: E402

LOW = -1e30  # score of items the model cannot rank (padding, items unseen in training)


def interactions_frame(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray) -> pd.DataFrame:
    """RecTools' interaction columns for events given in each user's sequence order ([E] arrays)."""
    return pd.DataFrame(
        {
            Columns.User: users.astype(np.int64),
            Columns.Item: items.astype(np.int64),
            Columns.Weight: 1.0,
            Columns.Datetime: pd.to_datetime(timestamps.astype(np.int64), unit="s"),
        }
    )


def flat_users(offsets: np.ndarray) -> np.ndarray:
    """[E] the user index of every event of a flat sequence array with `offsets` [M+2]."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def build_model(name: str, args: argparse.Namespace) -> SASRecModel | HSTUModel:
    """The RecTools model of `name` with this benchmark's sizes (see README_rectools.md, "Recipe")."""
    common = {
        "n_blocks": args.blocks,
        "n_heads": args.heads,
        "n_factors": args.dim,
        "dropout_rate": args.dropout,
        "session_max_len": args.max_len,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "item_net_block_types": (IdEmbeddingsItemNet,),
        "recommend_torch_device": "cpu",
        "recommend_batch_size": args.eval_batch_size,
        "deterministic": True,
    }
    if name == "sasrec":
        return SASRecModel(loss="softmax", **common)
    if name == "hstu":
        return HSTUModel(
            loss="sampled_softmax",
            n_negatives=args.hstu_negatives,
            relative_time_attention=not args.no_time_attention,
            relative_pos_attention=True,
            lightning_module_kwargs={"logits_t": args.hstu_logits_t},
            **common,
        )
    if name == "esasrec":
        return SASRecModel(
            loss="sampled_softmax",
            n_negatives=args.esasrec_negatives,
            transformer_layers_type=LiGRLayers,
            transformer_layers_kwargs={"ff_factors_multiplier": args.ligr_ff_multiplier, "ff_activation": "swiglu"},
            **common,
        )
    raise ValueError(f"unknown model {name!r}: expected sasrec, hstu or esasrec")


class CaseScorer:
    """Full score rows [C, N+1] in genrec's item order for exchange cases, from a RecTools transformer.

    Built once the model's item id map exists; the batches are made by RecTools' own recommend
    collate function from exactly the exchange's history slices.
    """

    def __init__(self, preparator: SASRecDataPreparator, seq: dict, num_items: int, use_time: bool) -> None:
        n_extra = preparator.n_item_extra_tokens
        external = preparator.item_id_map.external_ids  # internal id -> external (genrec) id
        self.genrec_of_internal = np.array([int(e) for e in external[n_extra:]], dtype=np.int64)  # ids n_extra..
        self.internal_of_genrec = np.full(num_items + 1, -1, dtype=np.int64)
        self.internal_of_genrec[self.genrec_of_internal] = np.arange(n_extra, n_extra + len(self.genrec_of_internal))
        self.n_extra = n_extra
        self.num_items = num_items
        self.preparator = preparator
        self.seq = seq
        self.use_time = use_time

    def batches(self, cases: dict, batch_size: int) -> list[dict[str, torch.Tensor]]:
        """RecTools recommend batches for the cases (history = the exchange slice, unseen items dropped)."""
        elements = []
        for a, b, t in zip(cases["history_start"], cases["history_end"], cases["target_timestamps"]):
            internal = self.internal_of_genrec[self.seq["items"][a:b]]
            seen = internal >= 0
            ses = list(internal[seen])
            extras = {}
            if self.use_time:  # RecTools' context row: a dummy item whose time is the request time
                ses.append(0)
                extras["unix_ts"] = list(self.seq["timestamps"][a:b][seen]) + [int(t)]
            elements.append((ses, [0.0] * len(ses), extras))
        return [
            self.preparator._collate_fn_recommend(elements[i : i + batch_size])
            for i in range(0, len(elements), batch_size)
        ]

    @torch.no_grad()
    def scores(self, torch_model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> np.ndarray:
        """[C, N+1] float32: the last position's similarity with every item, in genrec's item order."""
        was_training = torch_model.training
        torch_model.eval()
        item_embs = torch_model.item_model.get_all_embeddings()  # [n_internal, d]
        rows = []
        for batch in batches:
            session = torch_model.encode_sessions(batch, item_embs)[:, -1:, :]  # [B, 1, d]
            logits = torch_model.similarity_module(session, item_embs)[:, 0, :]  # [B, n_internal]
            out = np.full((len(logits), self.num_items + 1), LOW, dtype=np.float32)
            out[:, self.genrec_of_internal] = logits[:, self.n_extra :].float().numpy()
            rows.append(out)
        torch_model.train(was_training)
        return np.concatenate(rows)


class ValidSelection(pl.Callback):
    """Scores genrec's validation cases after every training epoch; keeps the best weights; stops early."""

    def __init__(self, seq: dict, valid: dict, num_items: int, use_time: bool, args: argparse.Namespace) -> None:
        self.seq, self.valid, self.num_items, self.use_time = seq, valid, num_items, use_time
        self.patience, self.max_seconds, self.batch_size = args.patience, args.max_minutes * 60, args.eval_batch_size
        self.history: list[dict] = []
        self.best = {"ndcg": -1.0, "epoch": 0, "state": None}
        self.since_best = 0
        self.stopped = ""
        self.scorer: CaseScorer | None = None
        self.valid_batches: list = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.scorer = CaseScorer(pl_module.data_preparator, self.seq, self.num_items, self.use_time)
        self.valid_batches = self.scorer.batches(self.valid, self.batch_size)
        self.start = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        train_s = time.perf_counter() - self.epoch_start
        t0 = time.perf_counter()
        scores = self.scorer.scores(pl_module.torch_model, self.valid_batches)
        ndcg = quick_ndcg10(scores, self.valid, self.seq["items"])
        epoch = trainer.current_epoch + 1
        loss = trainer.callback_metrics.get("train_loss")
        improved = ndcg > self.best["ndcg"]
        if improved:
            self.best = {"ndcg": ndcg, "epoch": epoch, "state": copy.deepcopy(pl_module.torch_model.state_dict())}
            self.since_best = 0
        else:
            self.since_best += 1
        elapsed = time.perf_counter() - self.start
        self.history.append(
            {
                "epoch": epoch,
                "train_loss": None if loss is None else float(loss),
                "train_seconds": train_s,
                "valid_seconds": time.perf_counter() - t0,
                "valid_ndcg@10": ndcg,
                "loadavg_1min": os.getloadavg()[0],
            }
        )
        loss_text = "n/a" if loss is None else f"{float(loss):.4f}"
        print(
            f"epoch {epoch:3d} loss {loss_text} train {train_s:5.1f}s "
            f"valid ndcg@10 {ndcg:.4f}{' *' if improved else ''} [{elapsed / 60:.1f} min]",
            flush=True,
        )
        if self.since_best >= self.patience:
            self.stopped = f"no improvement in {self.patience} epochs"
        elif elapsed > self.max_seconds:
            self.stopped = f"wall-clock cap {self.max_seconds / 60:g} min"
        if self.stopped:
            trainer.should_stop = True


def check_training_sequences(model, train: dict, max_len: int) -> int:
    """RecTools' training sequences must be each user's latest max_len + 1 training events; returns the count.

    The sequences are grouped exactly as RecTools' SequenceDataset.from_interactions groups them
    (stable sort by datetime, then by user), from the data preparator's own training interactions.
    """
    prep = model.data_preparator
    n_extra = prep.n_item_extra_tokens
    item_ext = np.array([int(e) for e in prep.item_id_map.external_ids[n_extra:]])
    user_ext = np.asarray(prep.train_dataset.user_id_map.external_ids).astype(np.int64)
    df = prep.train_dataset.interactions.df
    sessions = df.sort_values(Columns.Datetime, kind="stable").groupby(Columns.User, sort=False)[Columns.Item].agg(list)
    offsets = train["offsets"]
    for user, internal in sessions.items():
        u = int(user_ext[user])
        expected = train["items"][offsets[u] : offsets[u + 1]][-(max_len + 1) :]
        if not np.array_equal(item_ext[np.asarray(internal) - n_extra], expected):
            raise SystemExit(f"RecTools' training sequence of user {u} differs from train.npz's latest events")
    if len(sessions) != int((np.diff(offsets) >= 2).sum()):
        raise SystemExit(f"RecTools kept {len(sessions)} training users, train.npz has {(np.diff(offsets) >= 2).sum()}")
    return len(sessions)


def check_recommend_round_trip(model, use_time: bool, seq: dict, cases: dict, rows: np.ndarray, n: int = 64) -> dict:
    """RecTools' public recommend() on the first n cases must give the exported rows' top-20 (items, scores);
    use_time: the model reads the request time (HSTU with time attention), given as a context frame."""
    users, starts, ends = cases["users"][:n], cases["history_start"][:n], cases["history_end"][:n]
    parts = [np.arange(a, b) for a, b in zip(starts, ends)]
    idx = np.concatenate(parts)
    frame = interactions_frame(np.repeat(users, [len(p) for p in parts]), seq["items"][idx], seq["timestamps"][idx])
    dataset = Dataset.construct(frame)
    context = None
    if use_time:
        context = pd.DataFrame(
            {
                Columns.User: users.astype(np.int64),
                Columns.Datetime: pd.to_datetime(cases["target_timestamps"][:n].astype(np.int64), unit="s"),
                Columns.Weight: 1.0,
            }
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reco = model.recommend(users=users, dataset=dataset, k=20, filter_viewed=False, context=context)
    worst_score, mismatched = 0.0, 0
    for row, user in enumerate(users):
        r = reco[reco[Columns.User] == user].sort_values(Columns.Rank)
        ours = np.argsort(-rows[row], kind="stable")[:20]
        theirs = r[Columns.Item].to_numpy().astype(np.int64)
        if not np.array_equal(np.sort(ours), np.sort(theirs)):
            mismatched += 1
        worst_score = max(worst_score, float(np.abs(rows[row][theirs] - r[Columns.Score].to_numpy()).max()))
    if mismatched or worst_score > 1e-3:
        raise SystemExit(
            f"recommend() round trip failed: {mismatched} of {n} top-20 sets differ, max |d score| {worst_score}"
        )
    return {"cases": int(n), "top20_sets_equal": True, "max_abs_score_difference": worst_score}


def popularity_correlation(rows: np.ndarray, train: dict, num_items: int) -> float:
    """Pearson correlation of an item's mean score over the cases with its training count (seen items)."""
    counts = np.bincount(train["items"], minlength=num_items + 1).astype(np.float64)
    keep = (rows > LOW / 2).all(axis=0)  # the columns of items the model scores (column 0 never)
    mean = rows[:, keep].astype(np.float64).mean(axis=0)
    return float(np.corrcoef(mean, counts[keep])[0, 1])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, batch_size=32, max_epochs=200, patience=10, max_minutes=60.0)
    p.add_argument("--model", required=True, choices=["sasrec", "hstu", "esasrec"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--hstu-negatives", type=int, default=128)
    p.add_argument("--hstu-logits-t", type=float, default=0.05)
    p.add_argument(
        "--no-time-attention",
        action="store_true",
        help="HSTU with the relative position bias only (datasets without timestamps, as genrec's time_buckets: 0)",
    )
    p.add_argument("--esasrec-negatives", type=int, default=256)
    p.add_argument("--ligr-ff-multiplier", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True)
    folder = args.folder
    meta, train, seq, cases = load_exchange(folder)
    num_items = int(meta["num_items"])
    use_time = args.model == "hstu" and not args.no_time_attention  # a context row only when time is read

    frame = interactions_frame(flat_users(train["offsets"]), train["items"], train["timestamps"])
    dataset = Dataset.construct(frame)
    model = build_model(args.model, args)
    selection = ValidSelection(seq, cases["valid"], num_items, use_time, args)
    model._trainer = pl.Trainer(  # RecTools documents replacing the trainer this way
        max_epochs=args.max_epochs,
        deterministic=True,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[selection],
    )
    print(f"{folder}: {len(frame)} training events, {num_items} items, model {args.model}", flush=True)
    start = time.perf_counter()
    model.fit(dataset)
    train_wall = time.perf_counter() - start
    selection = next(c for c in model.fit_trainer.callbacks if isinstance(c, ValidSelection))  # fit deep-copies
    stopped = selection.stopped or f"max epochs {args.max_epochs}"

    model.torch_model.load_state_dict(selection.best["state"])
    scorer = CaseScorer(model.data_preparator, seq, num_items, use_time)
    rows = {}
    t0 = time.perf_counter()
    for which, c in cases.items():
        rows[which] = scorer.scores(model.torch_model, scorer.batches(c, args.eval_batch_size))
        np.save(folder / f"scores_{which}.npy", rows[which])
    score_s = time.perf_counter() - t0
    valid_again = quick_ndcg10(rows["valid"], cases["valid"], seq["items"])
    if abs(valid_again - selection.best["ndcg"]) > 1e-6:
        raise SystemExit(f"restored weights give valid NDCG@10 {valid_again}, selection saw {selection.best['ndcg']}")

    checks = {
        "training_users_checked": check_training_sequences(model, train, args.max_len),
        "recommend_round_trip": {w: check_recommend_round_trip(model, use_time, seq, cases[w], rows[w]) for w in cases},
        "popularity_correlation_test": popularity_correlation(rows["test"], train, num_items),
        "items_seen_in_training": int(len(scorer.genrec_of_internal)),
        "unseen_targets": {w: int((scorer.internal_of_genrec[c["targets"]] < 0).sum()) for w, c in cases.items()},
        "unseen_history_events": {
            w: int(
                (
                    scorer.internal_of_genrec[
                        np.concatenate([seq["items"][a:b] for a, b in zip(c["history_start"], c["history_end"])])
                    ]
                    < 0
                ).sum()
            )
            for w, c in cases.items()
        },
    }
    epochs = selection.history
    log = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model_config": json.loads(json.dumps(model.get_config(simple_types=True), default=str)),
        "versions": {
            "python": platform.python_version(),
            **{pkg: version(pkg) for pkg in ("torch", "rectools", "pytorch-lightning", "numpy", "pandas")},
        },
        "dataset": meta,
        "train_events": len(frame),
        "num_parameters": sum(p.numel() for p in model.torch_model.parameters()),
        "cpu_count": os.cpu_count(),
        "epochs": epochs,
        "epochs_trained": len(epochs),
        "stopped": stopped,
        "best_epoch": selection.best["epoch"],
        "best_valid_ndcg@10_inprocess": selection.best["ndcg"],
        "train_wall_seconds": train_wall,
        "mean_train_seconds_per_epoch": float(np.mean([e["train_seconds"] for e in epochs])),
        "mean_valid_seconds_per_epoch": float(np.mean([e["valid_seconds"] for e in epochs])),
        "seconds_to_best_epoch": float(
            sum(e["train_seconds"] + e["valid_seconds"] for e in epochs[: selection.best["epoch"]])
        ),
        "score_export_seconds": score_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checks": checks,
    }
    if args.genrec_python:
        for which in ("valid", "test"):
            metrics, seconds = genrec_evaluate(args.genrec_python, folder, which)
            log[f"genrec_{which}"] = metrics
            print(f"genrec {which}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
    out = folder / f"rectools_{args.model}.json"
    out.write_text(json.dumps(log, indent=2))
    print(
        f"best epoch {selection.best['epoch']} of {len(epochs)} ({stopped}); checks {json.dumps(checks)}; "
        f"peak RSS {log['peak_rss_mib']:.0f} MiB; log {out}",
        flush=True,
    )


if __name__ == "__main__":
    main()
