"""torch-rechub 0.9.0's HSTU, trained on a genrec exchange folder, scored for genrec's evaluator.

Runs in its own virtualenv (torch + torch-rechub, never genrec); imports only torch, numpy and
torch_rechub (plus the standard library). See benchmarks/external/exchange.py for the folder layout
and benchmarks/external/README_rechub.md for the commands and the numbers.

    /work/bench-venvs/rechub/bin/python benchmarks/external/rechub_hstu.py /tmp/rechub/ml-100k \
        [--samples last|sliding] [--max-epochs 60] [--patience 5] [--max-minutes 20] \
        [--genrec-python /work/main/.venv/bin/python]

What it does
------------
* Model: `torch_rechub.models.generative.hstu.HSTUModel` exactly as shipped (tied input/output
  item embedding + output bias, absolute position embedding, input-side time-bucket embedding,
  per-layer rab^{p,t} bias, SiLU(.)/max_seq_len attention), scores = last-position logits.
* Loss / trainer: `torch_rechub.trainers.seq_trainer.SeqTrainer.train_one_epoch`, i.e. torch-rechub's
  own loop: full-softmax cross-entropy over the whole catalogue at every non-padded position
  (autoregressive next-token; logit 0 = PAD forced to -1e9), no sampled negatives; Adam.
  The trainer's own `fit` is NOT used because its early stopping monitors top-1 accuracy of the
  next item; epochs are selected here by validation NDCG@10 instead (genrec's rule).
* Samples (torch-rechub's MovieLens preprocessing, examples/generative/data/ml-1m/preprocess_ml_hstu.py):
  a sample is (prefix, next item) of a user's training sequence; the prefix is truncated to the most
  recent 200 items and LEFT-padded with 0 to exactly 200; time_diffs[i] = t(last prefix item) - t[i]
  in seconds (0 at padding), the "query time minus timestamp" convention of the reference.
    --samples last     (default, the runs reported) one sample per user and epoch: the longest
                       prefix (the training sequence without its last item -> its last item), loss
                       at every position of it. This is the last sample of torch-rechub's sliding
                       window; genrec's trainer also uses one sequence per user (its last 201 events).
    --samples sliding  torch-rechub's recipe verbatim: every prefix of every user is a sample
                       (N-1 per user, ~97k on ML-100K). On 2 shared CPU cores (41-115 samples/s)
                       that is 14-40 min per epoch on ML-100K, so it does not fit this benchmark's
                       budget (~20 min per dataset) beyond one epoch; implemented, not run.
* Evaluation cases: the history of case c (sequences.items[history_start:history_end]) is built
  the same way (last 200, left-padded, time_diffs from the last history event); its score row is
  the model's logits at the last position. Raw logits are written (no masking); genrec's evaluator
  masks the history and ranks pessimistically. For epoch selection, validation NDCG@10 is computed
  in-process with the same rule (history masked, pessimistic ties); the final numbers come from
  `exchange.py evaluate` (genrec's evaluator) when --genrec-python is given.

Hyper-parameters
----------------
Set to genrec's configs/ml-100k/hstu.yaml where torch-rechub has the knob: d_model=50, n_layers=2,
n_heads=1, dqk=50 (attention_dim), dv=50 (value_dim), dropout=0.2, max_seq_len=200, 128 time buckets,
lr=1e-3, Adam betas=(0.9, 0.98), batch 128, early stopping on valid NDCG@10 with patience 5.
Kept from torch-rechub's recipe (no genrec equivalent, or genrec differs by design):
  - loss: full-softmax CE over all items at every position (genrec: sampled softmax, 128 uniform
    negatives, temperature 0.05, on L2-normalised vectors);
  - optimizer: torch.optim.Adam with weight_decay=1e-5 (SeqTrainer's default; genrec: AdamW, wd 0);
  - scoring: dot product + output bias with tied embeddings, no L2 normalisation/temperature;
  - input embeddings not scaled by sqrt(d) (genrec scales); xavier-uniform init; LayerNorms with
    affine parameters and biases in f1 (genrec: none, as the reference);
  - time: input-side time-bucket embedding (genrec has none) and rab time buckets = sqrt(minutes),
    clipped to 128 buckets, rab per head (genrec: log-spaced buckets of seconds, shared by heads);
    time differences are anchored at the last history event (genrec: the target/request time);
  - left padding to 200 (absolute positions count from the left of the padded window; genrec
    right-pads);
  - epochs: up to 60 (genrec's config: 30) and a wall-clock cap (--max-minutes) per dataset;
  - torch-rechub's example runs 5 epochs with d_model=256, 8 heads, dropout 0.1, batch 512 and
    the sliding window; those sizes were replaced by genrec's as above.

Outputs (in the exchange folder): scores_valid.npy and scores_test.npy (float32 [C, N+1], best
epoch) and rechub_hstu.json (settings, versions, per epoch: wall and process-CPU seconds,
sequences/s, loss, valid NDCG@10, 1-min load average; best epoch, peak RSS, evaluation seconds,
genrec's metrics).
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # SeqTrainer wraps its loop in tqdm; keep the log readable

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch_rechub.models.generative.hstu import HSTUModel  # noqa: E402
from torch_rechub.trainers.seq_trainer import SeqTrainer  # noqa: E402
from torch_rechub.utils.data import SequenceDataGenerator  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_eval import add_common_args, genrec_evaluate, load_exchange, quick_ndcg10  # noqa: E402


def windows(items: np.ndarray, timestamps: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int):
    """torch-rechub's sample layout for the ranges [starts, ends) of a flat item array.

    Returns (tokens [S, max_len] int64, time_diffs [S, max_len] int64): the most recent max_len items
    of each range, left-padded with 0; time_diffs = t(last item of the range) - t[i], 0 at padding.
    """
    idx = ends[:, None] - max_len + np.arange(max_len)[None, :]  # [S, L], last column = ends - 1
    valid = idx >= starts[:, None]
    safe = np.where(valid, idx, 0)
    tokens = np.where(valid, items[safe], 0).astype(np.int64)
    anchor = timestamps[ends - 1]
    diffs = np.where(valid, anchor[:, None] - timestamps[safe], 0).astype(np.int64)
    return tokens, diffs


def training_samples(train: dict, mode: str, max_len: int):
    """(tokens, time_diffs, targets) of the training samples; see the module docstring."""
    offsets = train["offsets"]
    lengths = np.diff(offsets)
    users = np.nonzero(lengths >= 2)[0]
    if mode == "last":
        starts = offsets[users]
        ends = offsets[users + 1] - 1  # the prefix excludes the last training item, its target
    elif mode == "sliding":
        per_user = lengths[users] - 1
        starts = np.repeat(offsets[users], per_user)
        first = np.repeat(np.cumsum(per_user) - per_user, per_user)
        ends = starts + 1 + (np.arange(per_user.sum()) - first)  # prefix lengths 1 .. n-1
    else:
        raise ValueError(mode)
    tokens, diffs = windows(train["items"], train["timestamps"], starts, ends, max_len)
    return tokens, diffs, train["items"][ends].astype(np.int64)


@torch.no_grad()
def score(model: HSTUModel, tokens: np.ndarray, diffs: np.ndarray, batch_size: int) -> np.ndarray:
    """Last-position logits [C, V] float32 (V = N+1; column 0 = PAD, set to -1e9 as torch-rechub does)."""
    model.eval()
    rows = []
    for b in range(0, len(tokens), batch_size):
        x = torch.from_numpy(tokens[b : b + batch_size])
        t = torch.from_numpy(diffs[b : b + batch_size])
        logits = model(x, t)[:, -1, :].float()
        logits[:, 0] = -1e9
        rows.append(logits.numpy())
    return np.concatenate(rows).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, batch_size=128, max_epochs=60, patience=5, max_minutes=20.0)
    p.add_argument("--samples", choices=["last", "sliding"], default="last")
    p.add_argument("--dqk", type=int, default=50)
    p.add_argument("--dv", type=int, default=50)
    p.add_argument("--time-buckets", type=int, default=128)
    p.add_argument("--betas", default="0.9,0.98")
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=2022)
    p.add_argument("--log", default="rechub_hstu.json")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    folder = args.folder
    meta, train, seq, cases = load_exchange(folder)
    num_items = int(meta["num_items"])

    tokens, diffs, targets = training_samples(train, args.samples, args.max_len)
    positions = np.broadcast_to(np.arange(args.max_len), tokens.shape)  # unused by HSTUModel, kept for the API
    loader = SequenceDataGenerator(tokens, positions, targets, diffs).generate_dataloader(batch_size=args.batch_size)[0]
    trained_tokens = int((tokens != 0).sum())  # positions that carry a loss term per epoch
    inputs = {
        w: windows(
            seq["items"],
            seq["timestamps"],
            c["history_start"].astype(np.int64),
            c["history_end"].astype(np.int64),
            args.max_len,
        )
        for w, c in cases.items()
    }

    model = HSTUModel(
        vocab_size=num_items + 1,
        d_model=args.dim,
        n_heads=args.heads,
        n_layers=args.blocks,
        dqk=args.dqk,
        dv=args.dv,
        max_seq_len=args.max_len,
        dropout=args.dropout,
        num_time_buckets=args.time_buckets,
    )
    betas = tuple(float(b) for b in args.betas.split(","))
    trainer = SeqTrainer(
        model,
        optimizer_fn=torch.optim.Adam,
        optimizer_params={"lr": args.lr, "betas": betas, "weight_decay": args.weight_decay},
        n_epoch=args.max_epochs,
        earlystop_patience=args.patience,
        device="cpu",
        model_path=str(folder),
    )
    num_params = sum(p.numel() for p in model.parameters())
    print(
        f"{folder}: {len(tokens)} training samples ({args.samples}), {num_items} items, {num_params:,} parameters",
        flush=True,
    )

    log = {
        "settings": vars(args) | {"folder": str(folder), "betas": list(betas)},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_rechub": version("torch-rechub"),
            "numpy": np.__version__,
        },
        "dataset": meta,
        "train_samples": len(tokens),
        "trained_positions_per_epoch": trained_tokens,
        "num_parameters": num_params,
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "epochs": [],
    }
    best = {"ndcg": -1.0, "epoch": 0, "state": None, "valid_scores": None}
    since_best = 0
    start = time.perf_counter()
    for epoch in range(1, args.max_epochs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = trainer.train_one_epoch(loader)
        train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        valid_scores = score(model, *inputs["valid"], args.eval_batch_size)
        score_s = time.perf_counter() - t1
        ndcg = quick_ndcg10(valid_scores, cases["valid"], seq["items"])
        eval_s = time.perf_counter() - t1
        record = {
            "epoch": epoch,
            "loss": loss,
            "train_seconds": train_s,
            "train_cpu_seconds": train_cpu_s,
            "sequences_per_s": len(tokens) / train_s,
            "positions_per_s": trained_tokens / train_s,
            "valid_score_seconds": score_s,
            "valid_eval_seconds": eval_s,
            "valid_ndcg@10": ndcg,
            "loadavg_1min": os.getloadavg()[0],
        }
        log["epochs"].append(record)
        improved = ndcg > best["ndcg"]
        if improved:
            best = {
                "ndcg": ndcg,
                "epoch": epoch,
                "state": copy.deepcopy(model.state_dict()),
                "valid_scores": valid_scores,
            }
            since_best = 0
        else:
            since_best += 1
        elapsed = time.perf_counter() - start
        print(
            f"epoch {epoch:3d} loss {loss:.4f} train {train_s:6.1f}s ({len(tokens) / train_s:7.1f} seq/s) "
            f"valid ndcg@10 {ndcg:.4f}{' *' if improved else ''} [{elapsed / 60:.1f} min]",
            flush=True,
        )
        if since_best >= args.patience:
            log["stopped"] = f"no improvement in {args.patience} epochs"
            break
        if elapsed > args.max_minutes * 60:
            log["stopped"] = f"wall-clock cap {args.max_minutes} min"
            break
    else:
        log["stopped"] = f"max epochs {args.max_epochs}"
    log["train_wall_seconds"] = time.perf_counter() - start

    model.load_state_dict(best["state"])
    np.save(folder / "scores_valid.npy", best["valid_scores"])
    t0 = time.perf_counter()
    test_scores = score(model, *inputs["test"], args.eval_batch_size)
    test_score_s = time.perf_counter() - t0
    np.save(folder / "scores_test.npy", test_scores)
    epochs = log["epochs"]
    log.update(
        {
            "epochs_trained": len(epochs),
            "best_epoch": best["epoch"],
            "best_valid_ndcg@10_inprocess": best["ndcg"],
            "mean_train_seconds_per_epoch": float(np.mean([e["train_seconds"] for e in epochs])),
            "mean_train_cpu_seconds_per_epoch": float(np.mean([e["train_cpu_seconds"] for e in epochs])),
            "mean_sequences_per_s": float(np.mean([e["sequences_per_s"] for e in epochs])),
            "mean_valid_eval_seconds": float(np.mean([e["valid_eval_seconds"] for e in epochs])),
            "test_score_seconds": test_score_s,
            "num_test_cases": len(test_scores),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
    if args.genrec_python:
        for which in ("valid", "test"):
            metrics, seconds = genrec_evaluate(args.genrec_python, folder, which)
            log[f"genrec_{which}"] = metrics
            log[f"genrec_{which}_eval_seconds"] = seconds
            print(f"genrec {which}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
    (folder / args.log).write_text(json.dumps(log, indent=2))
    print(
        f"best epoch {best['epoch']} of {len(epochs)}; peak RSS {log['peak_rss_mib']:.0f} MiB; log {folder / args.log}"
    )


if __name__ == "__main__":
    sys.exit(main())
