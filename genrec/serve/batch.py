"""Batch inference: the top k of many users or request histories, streamed into a Parquet file.

Output columns: `user` (the raw user id, or a history request's `id`), `rank` (1 = best), `item`
(the raw item id) and `score`. Users are scored a batch at a time (a [batch, N+1] score matrix, sized
like the evaluator's) and each batch is written as it is done, so memory does not grow with the
number of users. The file appears only when complete.

A histories file holds requests that are not users of the dataset, one per JSON line or Parquet row:
`{"id": "r1", "history": ["<raw item id>", ...], "timestamps": [...], "request_time": 0}`; only
`history` is required (`id` defaults to the line number).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from genrec.errors import DataError
from genrec.eval.evaluator import auto_batch_size
from genrec.io import atomic_output_file
from genrec.serve.recommender import Query, Recommender

log = logging.getLogger("genrec.serve")

REQUEST_KEYS = {"id", "history", "timestamps", "request_time", "exclude", "allow", "exclude_seen"}


@dataclass
class BatchSummary:
    out: Path
    requests: int  # users or histories answered
    rows: int  # recommendations written
    skipped_users: int  # users of a --users file not in the dataset
    fallback: int  # requests answered with the popularity list (no known history item)


def read_user_ids(path: str | Path) -> list[str]:
    """Raw user ids, one per line of a text file (blank lines skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"no users file at {path}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return [line.strip() for line in lines if line.strip()]


def read_requests(path: str | Path, chunk: int = 1024) -> Iterator[list[tuple[str, Query]]]:
    """Chunks of (request id, Query) from a JSON-lines or Parquet histories file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no histories file at {path}")
    rows: Iterator[tuple[int, dict[str, Any]]]
    if path.suffix == ".parquet":
        rows = ((i, r) for i, r in enumerate(_parquet_rows(path), 1))
    else:
        rows = _json_rows(path)
    batch: list[tuple[str, Query]] = []
    for number, row in rows:
        batch.append(_request(path, number, row))
        if len(batch) == chunk:
            yield batch
            batch = []
    if batch:
        yield batch


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    if "history" not in file.schema_arrow.names:
        raise DataError(f"{path}: no 'history' column (columns: {', '.join(file.schema_arrow.names)})")
    for record_batch in file.iter_batches(batch_size=4096):
        yield from record_batch.to_pylist()


def _json_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        try:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _request(path: Path, number: int, row: Any) -> tuple[str, Query]:
    where = f"{path}, {'row' if path.suffix == '.parquet' else 'line'} {number}"
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with a 'history' list")
    unknown = set(row) - REQUEST_KEYS
    if unknown:
        raise DataError(f"{where}: unknown field {sorted(unknown)[0]!r} (fields: {', '.join(sorted(REQUEST_KEYS))})")
    history = row.get("history")
    if not isinstance(history, list):
        raise DataError(f"{where}: 'history' should be a list of item ids, got {type(history).__name__}")
    timestamps = row.get("timestamps")
    if timestamps is not None and (
        not isinstance(timestamps, list)
        or len(timestamps) != len(history)
        or not all(isinstance(t, int) for t in timestamps)
    ):
        raise DataError(f"{where}: 'timestamps' should be a list of {len(history)} integers (one per history item)")
    request_time = row.get("request_time")
    if request_time is not None and not isinstance(request_time, int):
        raise DataError(f"{where}: 'request_time' should be an integer (unix seconds)")
    query = Query(
        history,
        0,
        timestamps,
        request_time,
        bool(row.get("exclude_seen", True)),
        row.get("exclude") or (),
        row.get("allow"),
    )
    return str(row.get("id", number)), query


class _Writer:
    """Appends top-k batches to a Parquet file as row groups."""

    def __init__(self, path: Path, recommender: Recommender, user_type: pa.DataType) -> None:
        self.item_ids = recommender.dataset.items["raw_id"].combine_chunks()
        schema = pa.schema(
            [("user", user_type), ("rank", pa.int32()), ("item", self.item_ids.type), ("score", pa.float32())]
        )
        self.writer = pq.ParquetWriter(path, schema)
        self.rows = 0

    def write(self, users: pa.Array, items: np.ndarray, scores: np.ndarray, ks: np.ndarray) -> None:
        """users: [B]; items, scores: [B, K] from `Recommender.top_k` (0 = nothing there); ks: [B]."""
        B, K = items.shape
        ranks = np.broadcast_to(np.arange(1, K + 1, dtype=np.int32), (B, K))
        keep = (items > 0) & (ranks <= ks[:, None])
        rows = np.repeat(np.arange(B), keep.sum(axis=1))
        table = pa.table(
            {
                "user": users.take(pa.array(rows)),
                "rank": pa.array(ranks[keep]),
                "item": self.item_ids.take(pa.array(items[keep] - 1)),
                "score": pa.array(scores[keep].astype(np.float32)),
            }
        )
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        self.writer.close()


def recommend_to_parquet(
    recommender: Recommender,
    out: str | Path,
    k: int = 100,
    users: str | Path = "all",
    histories: str | Path | None = None,
    overwrite: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
) -> BatchSummary:
    """Write the top `k` of every user (`users="all"`), of the users listed in a file, or of the
    requests in a `histories` file, to the Parquet file `out`."""
    out = Path(out)
    batch_size = batch_size or auto_batch_size(recommender.num_items, recommender.max_len)
    with atomic_output_file(out, overwrite) as tmp:
        if histories is not None:
            summary = _write_histories(recommender, tmp, histories, k, batch_size, progress)
        else:
            summary = _write_users(recommender, tmp, users, k, batch_size, progress)
    summary.out = out
    return summary


def _write_users(
    recommender: Recommender, tmp: Path, users: str | Path, k: int, batch_size: int, progress: bool
) -> BatchSummary:
    raw_users = recommender.dataset.users["raw_id"].combine_chunks()
    skipped = fallback = 0
    if str(users) == "all":
        indices = np.arange(1, recommender.dataset.num_users + 1, dtype=np.int64)
    else:
        listed = read_user_ids(users)
        found = np.array([recommender.user_index.get(u, 0) for u in listed], dtype=np.int64)
        skipped = int((found == 0).sum())
        if skipped:
            log.warning("%d of %d users in %s are not in the dataset; they are skipped", skipped, len(listed), users)
        indices = found[found > 0]
    writer = _Writer(tmp, recommender, raw_users.type)
    try:
        with tqdm(total=len(indices), desc="recommend", unit="user", disable=not progress) as bar:
            for begin in range(0, len(indices), batch_size):
                chunk = indices[begin : begin + batch_size]
                cases = recommender.user_cases(chunk, k)
                items, scores = recommender.top_k(cases, batch_size)
                writer.write(raw_users.take(pa.array(chunk - 1)), items, scores, cases.ks)
                fallback += int(recommender.fallbacks(cases).sum())
                bar.update(len(chunk))
    finally:
        writer.close()
    return BatchSummary(tmp, len(indices), writer.rows, skipped, fallback)


def _write_histories(
    recommender: Recommender, tmp: Path, histories: str | Path, k: int, batch_size: int, progress: bool
) -> BatchSummary:
    writer = _Writer(tmp, recommender, pa.string())
    requests = fallback = 0
    try:
        with tqdm(desc="recommend", unit="request", disable=not progress) as bar:
            for chunk in read_requests(histories, batch_size):
                ids = [request_id for request_id, _ in chunk]
                queries = [
                    Query(q.history, k, q.timestamps, q.request_time, q.exclude_seen, q.exclude, q.allow)
                    for _, q in chunk
                ]
                cases, _, _ = recommender.cases_of(queries)
                items, scores = recommender.top_k(cases, batch_size)
                writer.write(pa.array(ids, pa.string()), items, scores, cases.ks)
                requests += len(chunk)
                fallback += int(recommender.fallbacks(cases).sum())
                bar.update(len(chunk))
    finally:
        writer.close()
    return BatchSummary(tmp, requests, writer.rows, 0, fallback)
