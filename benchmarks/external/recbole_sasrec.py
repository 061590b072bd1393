"""RecBole 1.2.1 SASRec on a genrec exchange folder (runs in the RecBole virtualenv, never imports genrec).

    /work/bench-venvs/recbole/bin/python benchmarks/external/recbole_sasrec.py DIR [--max-minutes 20]

DIR is a folder written by `exchange.py export` (see that file's docstring). This script

1. writes every user's full sequence (sequences.npz) as RecBole atomic files under DIR/recbole/atomic:
   `user_id:token  item_id:token  timestamp:float`, tokens = genrec's user/item indices as strings,
   timestamp = the event's position inside its user's sequence (0, 1, 2, ...). Pseudo-timestamps are
   strictly increasing per user, so RecBole's `order: TO` sort cannot reorder genrec's ties.
2. lets RecBole split it with its own leave-one-out (`split: {LS: valid_and_test}, order: TO,
   group_by: user`), and checks row by row that the result is genrec's split: the training rows are
   exactly the events of train.npz (each with its last <= MAX_ITEM_LIST_LENGTH predecessors), the
   valid/test rows have the targets and (truncated) histories of valid.npz/test.npz, and RecBole kept
   every user, item and event (no re-filtering). Any mismatch aborts.
3. trains RecBole's SASRec (CE loss over the full catalogue) with RecBole's own Trainer epoch/eval
   functions and early stopping on valid NDCG@10, plus a wall-clock cap.
4. with the best model, writes DIR/scores_valid.npy and DIR/scores_test.npy (float32 [C, N+1], row c =
   case c of valid.npz/test.npz, column j = genrec item j, column 0 = -inf), mapping RecBole's internal
   item ids back through their token strings, and DIR/recbole_sasrec.json (config, RecBole's own
   metrics, local re-computations, timings, peak RSS).

Evaluate the scores with genrec (genrec venv):
    python benchmarks/external/exchange.py evaluate DIR --scores DIR/scores_test.npy --which test --json

Note: RecBole 1.2.1 does NOT mask the user's history in full-sort evaluation of sequential models
(FullSortEvalDataLoader returns history_index=None for them), whereas genrec masks it. The JSON holds
both local re-computations (genrec's pessimistic tie rule, with and without history masking) so that
RecBole's own numbers can be compared with the unmasked variant.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

DATASET = "genrec"


def write_atomic(folder: Path) -> Path:
    seq = np.load(folder / "sequences.npz")
    items, offsets = seq["items"], seq["offsets"]
    lengths = np.diff(offsets)
    users = np.repeat(np.arange(len(lengths)), lengths)  # user u owns items[offsets[u]:offsets[u+1]]
    positions = np.arange(len(items)) - offsets[users]
    atomic = folder / "recbole" / "atomic" / DATASET
    atomic.mkdir(parents=True, exist_ok=True)
    with open(atomic / f"{DATASET}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, i, p in zip(users.tolist(), items.tolist(), positions.tolist()):
            f.write(f"{u}\t{i}\t{p}\n")
    return atomic.parent


def recbole_config(folder: Path, args) -> dict:
    return {
        "data_path": str(folder / "recbole" / "atomic"),
        "checkpoint_dir": str(folder / "recbole" / "saved"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "rm_dup_inter": None,
        "filter_inter_by_user_or_item": False,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        # SASRec, genrec-equivalent sizes, RecBole's CE (full softmax) recipe
        "n_layers": 2,
        "n_heads": 1,
        "hidden_size": 50,
        "inner_size": 50,
        "hidden_dropout_prob": 0.2,
        "attn_dropout_prob": 0.2,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "initializer_range": 0.02,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "learner": "adam",
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "train_batch_size": 128,
        "eval_batch_size": 256,
        "epochs": args.epochs,
        "eval_step": 1,
        "stopping_step": args.stopping_step,
        "metrics": ["Recall", "MRR", "NDCG", "Hit"],
        "topk": [10, 50],
        "valid_metric": "NDCG@10",
        "valid_metric_bigger": True,
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": False,
        "device": "cpu",
        "show_progress": False,
        "worker": 0,
        "state": "INFO",
    }


def check_split(folder: Path, dataset, train_ds, valid_ds, test_ds, max_len: int) -> dict:
    """Abort unless RecBole's datasets are genrec's split, row by row."""
    seq = np.load(folder / "sequences.npz")
    items, offsets = seq["items"], seq["offsets"]
    train = np.load(folder / "train.npz")
    meta = json.loads((folder / "meta.json").read_text())
    num_users, num_items = meta["num_users"], meta["num_items"]
    uid_tok = dataset.field2id_token["user_id"]
    iid_tok = dataset.field2id_token["item_id"]
    uid2user = np.array([0] + [int(t) for t in uid_tok[1:]])
    iid2item = np.array([0] + [int(t) for t in iid_tok[1:]])
    lengths = np.diff(offsets)[1:]
    problems = []
    if dataset.user_num - 1 != int((lengths > 0).sum()) or dataset.user_num - 1 != num_users:
        problems.append(f"users: RecBole {dataset.user_num - 1}, genrec {num_users}")
    if dataset.item_num - 1 != num_items:
        problems.append(f"items: RecBole {dataset.item_num - 1}, genrec {num_items}")
    if sorted(iid2item[1:].tolist()) != list(range(1, num_items + 1)):
        problems.append("item tokens are not 1..N")

    def rows(ds):
        f = ds.inter_feat
        user = uid2user[f["user_id"].numpy()]
        target = iid2item[f["item_id"].numpy()]
        pos = f["timestamp"].numpy().astype(np.int64)
        hist = iid2item[f["item_id_list"].numpy()]
        hlen = f["item_length"].numpy()
        return user, target, pos, hist, hlen

    def check_rows(name, ds, expected_pos):
        user, target, pos, hist, hlen = rows(ds)
        if not np.array_equal(items[offsets[user] + pos], target):
            problems.append(f"{name}: target is not the event at its pseudo-timestamp")
        if not np.array_equal(hlen, np.minimum(pos, max_len)):
            problems.append(f"{name}: history length is not min(position, {max_len})")
        cols = np.arange(hist.shape[1])
        want = np.where(
            cols[None, :] < hlen[:, None], offsets[user][:, None] + pos[:, None] - hlen[:, None] + cols[None, :], -1
        )
        want_items = np.where(want >= 0, items[np.maximum(want, 0)], 0)
        if not np.array_equal(hist, want_items):
            problems.append(f"{name}: history is not the last {max_len} events before the target")
        got = sorted(zip(user.tolist(), pos.tolist()))
        if got != expected_pos:
            problems.append(
                f"{name}: (user, position) set differs from genrec's ({len(got)} vs {len(expected_pos)} rows)"
            )
        return user

    # training rows: every train.npz event except each user's first (it has no history)
    t_off = train["offsets"]
    expected_train = [(u, p) for u in range(1, len(t_off) - 1) for p in range(1, t_off[u + 1] - t_off[u])]
    if not np.array_equal(
        train["items"],
        np.concatenate([items[offsets[u] : offsets[u] + t_off[u + 1] - t_off[u]] for u in range(len(t_off) - 1)]),
    ):
        problems.append("train.npz is not a prefix of each user's sequence")
    check_rows("train", train_ds, expected_train)
    case_rows = {}
    for which, ds in (("valid", valid_ds), ("test", test_ds)):
        c = np.load(folder / f"{which}.npz")
        expected = sorted(zip(c["users"].tolist(), (c["history_end"] - offsets[c["users"]]).tolist()))
        user = check_rows(which, ds, expected)
        # targets and history ranges as genrec's cases say
        by_user = {int(u): i for i, u in enumerate(c["users"])}
        idx = np.array([by_user[int(u)] for u in user])
        f = ds.inter_feat
        if not np.array_equal(iid2item[f["item_id"].numpy()], c["targets"][idx]):
            problems.append(f"{which}: targets differ from {which}.npz")
        if not np.array_equal(c["history_start"], offsets[c["users"]]):
            problems.append(f"{which}: history_start is not the sequence start")
        case_rows[which] = idx
    if problems:
        raise SystemExit("RecBole's split is not genrec's:\n  " + "\n  ".join(problems))
    return {
        "train_rows": len(expected_train),
        "valid_rows": len(valid_ds),
        "test_rows": len(test_ds),
        "case_rows": case_rows,
        "iid2item": iid2item,
    }


def local_metrics(scores: np.ndarray, folder: Path, which: str, mask: bool) -> dict:
    """genrec's rule (pessimistic ties, column 0 excluded, history masked if `mask`), in numpy."""
    seq = np.load(folder / "sequences.npz")
    c = np.load(folder / f"{which}.npz")
    s = scores.astype(np.float64).copy()
    s[:, 0] = -np.inf
    rows = np.arange(len(s))
    t = s[rows, c["targets"]].copy()
    if mask:
        for r in rows:
            s[r, seq["items"][c["history_start"][r] : c["history_end"][r]]] = -np.inf
        s[rows, c["targets"]] = t
    rank = (s >= t[:, None]).sum(1)
    out = {}
    for k in (10, 50):
        hit = rank <= k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1 / np.log2(rank + 1), 0).mean())
    out["mrr"] = float((1 / rank).mean())
    out["mrr@10"] = float(np.where(rank <= 10, 1 / rank, 0).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--stopping-step", type=int, default=10)
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=20.0,
        help="wall-clock cap on training: no epoch starts that would end past it",
    )
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--load-best", type=Path, help="skip training: load this state dict (DIR/recbole/best_state.pt)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.folder.resolve()
    meta = json.loads((folder / "meta.json").read_text())
    num_items = meta["num_items"]

    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import early_stopping, init_logger, init_seed

    # recbole/model/sequential_recommender/sine.py calls torch.autograd.set_detect_anomaly(True) at import
    # time, for every model. Anomaly mode only adds NaN checks and stack recording (it changes no number)
    # but makes each SASRec step ~2.5x slower on CPU, so switch it back off.
    anomaly_was_on = torch.is_anomaly_enabled()
    torch.autograd.set_detect_anomaly(False)

    t0 = time.time()
    sys.argv = sys.argv[:1]  # RecBole's Config parses --key=value command-line arguments as config
    write_atomic(folder)
    os.chdir(folder / "recbole")  # RecBole writes ./log and ./log_tensorboard into the working directory
    config = Config(model="SASRec", dataset=DATASET, config_dict=recbole_config(folder, args))
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = logging.getLogger()
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    split = check_split(folder, dataset, train_data._dataset, valid_data._dataset, test_data._dataset, args.max_len)
    logger.info(
        f"split check passed: {split['train_rows']} train rows, {split['valid_rows']} valid, {split['test_rows']} test"
    )
    prep_s = time.time() - t0

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    # RecBole's Trainer.fit, step for step, with a wall-clock cap and the best state kept in memory
    trainer.eval_collector.data_collect(train_data)
    history, best_state, best_epoch, stop_reason = [], None, -1, "epochs"
    train_start = time.time()
    for epoch in range(config["epochs"] if args.load_best is None else 0):
        e0 = time.time()
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        e1 = time.time()
        valid_score, valid_result = trainer._valid_epoch(valid_data, show_progress=False)
        e2 = time.time()
        trainer.best_valid_score, trainer.cur_step, stop, update = early_stopping(
            valid_score, trainer.best_valid_score, trainer.cur_step, max_step=trainer.stopping_step, bigger=True
        )
        history.append(
            {
                "epoch": epoch,
                "loss": float(loss),
                "train_s": e1 - e0,
                "valid_s": e2 - e1,
                "valid": {k: float(v) for k, v in valid_result.items()},
            }
        )
        logger.info(
            f"epoch {epoch}: loss {loss:.4f} train {e1 - e0:.1f}s valid {e2 - e1:.1f}s ndcg@10 {valid_score:.4f}"
        )
        if update:
            best_state, best_epoch = copy.deepcopy(model.state_dict()), epoch
            trainer.best_valid_result = valid_result
        if stop:
            stop_reason = f"early stopping ({trainer.stopping_step} evals without improvement after the best)"
            break
        elapsed = time.time() - train_start
        if elapsed + elapsed / (epoch + 1) > args.max_minutes * 60:  # the next epoch would pass the cap
            stop_reason = f"wall-clock cap ({args.max_minutes} min)"
            break
    train_s = time.time() - train_start
    if args.load_best is not None:
        best_state = torch.load(args.load_best)
        saved = (
            json.loads((folder / "recbole_sasrec.json").read_text())
            if (folder / "recbole_sasrec.json").exists()
            else {}
        )
        history, best_epoch, stop_reason = (
            saved.get("history", []),
            saved.get("best_epoch", -1),
            saved.get("stop_reason", "loaded"),
        )
        train_s = saved.get("train_seconds", 0.0)
    else:
        torch.save(best_state, folder / "recbole" / "best_state.pt")
    model.load_state_dict(best_state)
    model.eval()

    recbole_valid = {k: float(v) for k, v in trainer.evaluate(valid_data, load_best_model=False).items()}
    recbole_test = {k: float(v) for k, v in trainer.evaluate(test_data, load_best_model=False).items()}

    iid2item = split["iid2item"]
    result = {}
    for which, data in (("valid", valid_data), ("test", test_data)):
        f = data._dataset.inter_feat
        out = np.full((len(f), num_items + 1), -np.inf, dtype=np.float32)
        with torch.no_grad():
            for b in range(0, len(f), 256):
                part = model.full_sort_predict(f[b : b + 256])  # [B, RecBole item_num], column 0 = [PAD]
                out[split["case_rows"][which][b : b + 256][:, None], iid2item[None, 1:]] = part[:, 1:].numpy()
        assert np.isfinite(out[:, 1:]).all()
        np.save(folder / f"scores_{which}.npy", out)
        result[which] = {
            "masked": local_metrics(out, folder, which, True),
            "unmasked": local_metrics(out, folder, which, False),
        }

    report = {
        "library": f"RecBole {recbole.__version__}",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "anomaly_detection_switched_off": anomaly_was_on,
        "folder": str(folder),
        "meta": meta,
        "config": {
            k: str(config[k]) if k == "device" else config[k]
            for k in recbole_config(folder, args)
            if k not in ("data_path", "checkpoint_dir")
        },
        "split_check": {k: split[k] for k in ("train_rows", "valid_rows", "test_rows")} | {"passed": True},
        "recbole_valid": recbole_valid,
        "recbole_test": recbole_test,
        "local_valid": result["valid"],
        "local_test": result["test"],
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "stop_reason": stop_reason,
        "seconds_per_epoch_train": float(np.mean([h["train_s"] for h in history])) if history else None,
        "seconds_per_epoch_valid": float(np.mean([h["valid_s"] for h in history])) if history else None,
        "train_seconds": train_s,
        "prep_seconds": prep_s,
        "total_seconds": time.time() - t0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "max_minutes": args.max_minutes,
        "history": history,
    }
    (folder / "recbole_sasrec.json").write_text(json.dumps(report, indent=2))
    summary = {
        k: report[k]
        for k in (
            "recbole_valid",
            "recbole_test",
            "local_test",
            "epochs_run",
            "best_epoch",
            "stop_reason",
            "seconds_per_epoch_train",
            "peak_rss_mib",
        )
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
