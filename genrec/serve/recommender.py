"""Recommendations from a trained run: raw item ids in, the model's top k raw item ids out.

The ranking is the evaluator's: a history becomes an `EvalBatch`, the model's own scorer scores the
whole catalogue (a generative model's scorer runs its trie-constrained beam search), the items the
evaluator would mask (the history) and those the request excludes score -inf, and the k best remain.
With an ANN index (`genrec.serve.index`) a sequential model's user vectors are searched there
instead of against the whole item table.

    rec = Recommender.from_run("runs/ml-1m-hstu")
    rec.recommend(["1193", "661", "914"], k=10).items[0].id
    rec.recommend_users(["42"], k=100)

Odd input is answered, not refused: unknown item ids in a history are skipped and counted; a history
with no known item gets the training split's most popular items, marked `fallback`; a history longer
than the model's `max_len` keeps its latest events (the whole history is still excluded). A model with
a time bias (HSTU) reads the given `timestamps` (unix seconds, one per history item); without them it
reads positions 0..L-1 as times and the result says `time_source: "positions"`. The request time is
`request_time`, by default the last history event's time (the position L without timestamps).

Two stages: with a ranker (`Recommender.from_run(run, ranker_run=...)`, or `genrec recommend RUN
--ranker RANKER_RUN`) the run retrieves each request's top `candidates` (the masks applied) and the
ranker reorders them by its combined heads (`rerank`: head -> weight; "retrieval": the weight of the
retrieval score, blended as `genrec.eval.two_stage` does); the scores returned are the reranking's.

Ties: items with equal scores are listed by their index in the dataset (first seen first): the items
sharing one semantic ID, which a generative model cannot tell apart, come in that order.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from genrec.checkpoints import BEST_CHECKPOINT, load_weights
from genrec.config import RunConfig
from genrec.data.dataset import Dataset, Sequences, flat_ranges
from genrec.errors import ConfigError, DataError
from genrec.eval.evaluator import EvalBatch, Scorer, auto_batch_size, padded_histories
from genrec.models.base import GeneratedRankingScorer, GenerativeRecommender, SequentialScorer
from genrec.models.popularity import Popularity
from genrec.run_dir import RunDir

if TYPE_CHECKING:
    from genrec.models.ranking import Ranker
    from genrec.serve.index import ItemIndex

log = logging.getLogger("genrec.serve")

TIME_SOURCES = ("timestamps", "positions", "unused")
RERANK_ROWS = 64  # requests a ranker scores at a time (early fusion: RERANK_ROWS * candidates sequences)


@dataclass(frozen=True)
class Query:
    """One request: a history of raw item ids (oldest first) and what to return.

    timestamps: unix seconds, one per history item (read by time-aware models only).
    request_time: the time the recommendation is for (default: the last history event's).
    exclude_seen: leave the history's items out (as the evaluator does).
    exclude: raw item ids never to return; allow: if given, return only these raw item ids.
    """

    history: Sequence[Any] = ()
    k: int = 10
    timestamps: Sequence[int] | None = None
    request_time: int | None = None
    exclude_seen: bool = True
    exclude: Sequence[Any] = ()
    allow: Sequence[Any] | None = None
    # the dataset's index of the user whose history this is (TIGER's user token, the user features of
    # SASRec / HSTU), 0 for a user the dataset does not know (user features: out of vocabulary)
    user: int = 0


@dataclass(frozen=True)
class RecommendedItem:
    id: Any  # the raw item id, as in the source data
    score: float  # the model's score (log-probability of the beam for generative models)
    fields: dict[str, Any] = field(default_factory=dict)  # the item's text fields (title, ...)


@dataclass(frozen=True)
class Recommendation:
    items: list[RecommendedItem]
    fallback: bool  # True when no history item was known and the list is the popularity ranking
    unknown_items: int  # history items not in the catalogue (skipped)
    time_source: str  # what a time-aware model read as times: timestamps | positions | unused
    model: str
    run: str

    def to_dict(self) -> dict[str, Any]:
        items = [{"id": item.id, "score": item.score, **item.fields} for item in self.items]
        return {
            "items": items,
            "fallback": self.fallback,
            "unknown_items": self.unknown_items,
            "time_source": self.time_source,
            "model": self.model,
            "run": self.run,
        }


@dataclass
class Cases:
    """B requests in item indices, as the model and the masks need them.

    items, timestamps: the histories, flat ([E] int64), row r is offsets[r]:offsets[r+1]
    request_times: [B] int64; banned: flat item indices never returned, row r is banned_offsets[r]:...[r+1]
    allowed: per row, the only item indices that may be returned (None = all)
    users: [B] int64 dataset user index for known users (TIGER's user token), 0 otherwise
    """

    sequences: Sequences
    request_times: np.ndarray
    ks: np.ndarray
    banned: np.ndarray
    banned_offsets: np.ndarray
    allowed: list[np.ndarray | None]
    users: np.ndarray

    def __len__(self) -> int:
        return len(self.ks)

    @property
    def empty(self) -> np.ndarray:
        """[B] bool: rows whose history holds no known item."""
        return self.sequences.offsets[1:] == self.sequences.offsets[:-1]


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """[B+1] int64 row offsets of rows with `lengths` ([B]) laid end to end."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


class Recommender:
    """A trained run (any model family) loaded once, answering top-k requests in raw ids."""

    def __init__(
        self,
        config: RunConfig,
        dataset: Dataset,
        scorer: Scorer,
        popularity: torch.Tensor,
        run_name: str,
        index: ItemIndex | None = None,
        ranker: Ranker | None = None,
        candidates: int = 200,
        rerank: dict[str, float] | None = None,
    ) -> None:
        """ranker: reorder the top `candidates` by its heads (`rerank`: weights, see the module docstring)."""
        self.config = config
        self.dataset = dataset
        self.scorer = scorer
        self.popularity = popularity.float()  # [N+1] training counts, the fallback ranking
        self.run_name = run_name
        self.index = index
        self.model_name = config.model.name
        self.num_items = dataset.num_items
        self.uses_time = config.model.uses_time
        # a trained model's scorer holds it; popularity's scorer is the fitted counts alone
        model = scorer.model if isinstance(scorer, (SequentialScorer, GeneratedRankingScorer)) else None
        self.max_len: int | None = None if model is None else model.max_len
        self.generative = isinstance(model, GenerativeRecommender)
        self.num_beams: int | None = model.config.num_beams if isinstance(model, GenerativeRecommender) else None
        if index is not None and not isinstance(scorer, SequentialScorer):
            raise ConfigError(f"an ANN index serves models with item vectors; {self.model_name!r} has none")
        if index is not None and index.num_items != self.num_items:
            raise DataError(
                f"the index holds {index.num_items:,} items but the run's dataset has {self.num_items:,}: "
                f"export the index from this run"
            )
        self.item_raw_ids = dataset.item_raw_ids()
        self.item_index = {str(raw): i for i, raw in enumerate(self.item_raw_ids) if i}
        self.user_index = {str(raw): u for u, raw in enumerate(dataset.user_raw_ids()) if u}
        table = dataset.items
        self.field_names = [c for c in table.column_names if c not in ("item", "raw_id")]
        self._fields = {name: table[name].to_pylist() for name in self.field_names}
        if candidates < 1:
            raise ConfigError(f"candidates must be >= 1, got {candidates}")
        self.ranker, self.candidates = ranker, candidates
        self.rerank_weights: dict[str, float] | None = None
        self.retrieval_weight = 0.0
        if ranker is not None:
            from genrec.ranking_run import split_retrieval_weight

            if ranker.num_items != self.num_items:
                raise DataError(f"the ranker scores {ranker.num_items:,} items, the run {self.num_items:,}")
            self.rerank_weights, self.retrieval_weight = split_retrieval_weight(rerank, ranker)

    # ---- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        device: str | None = None,
        index: str | Path | None = None,
        progress: bool = False,
        ranker_run: str | Path | None = None,
        candidates: int = 200,
        rerank: dict[str, float] | None = None,
    ) -> Recommender:
        """The best checkpoint of `run_dir` with its dataset (found as `genrec eval` finds it).

        device: where the model runs (default: the run's `train.device`, `auto` = CUDA when available).
        index: an index folder written by `genrec export --index` (sequential models only).
        ranker_run: a ranker run of the same data that reorders the top `candidates` (`rerank`: weights).
        """
        from genrec.runner import build_model, dataset_of_run, split_for

        run = RunDir.open(run_dir)
        config = run.config()
        if device is not None:
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, device=device))
        dataset = dataset_of_run(run, config, download=False)
        split = split_for(dataset, config)
        popularity = Popularity(dataset.num_items).fit(split.train)
        scorer: Scorer
        if config.model.name == "popularity":
            scorer = popularity
        else:
            checkpoint = run.path / BEST_CHECKPOINT
            if not checkpoint.is_file():
                raise ConfigError(f"{run.path} has no {BEST_CHECKPOINT}: train the run first (genrec train)")
            model = build_model(dataset, config, progress)
            load_weights(model, checkpoint)
            scorer = model.eval().scorer()
        item_index = None
        if index is not None:
            from genrec.serve.index import ItemIndex

            item_index = ItemIndex.load(index)
        ranker = None if ranker_run is None else load_ranker_for(run, config, dataset, ranker_run, device)
        return cls(
            config, dataset, scorer, popularity.counts, run.path.resolve().name, item_index, ranker, candidates, rerank
        )

    # ---- public API --------------------------------------------------------------------------------
    def recommend(
        self,
        history: Sequence[Any],
        k: int = 10,
        timestamps: Sequence[int] | None = None,
        request_time: int | None = None,
        exclude_seen: bool = True,
        exclude: Sequence[Any] = (),
        allow: Sequence[Any] | None = None,
        user: Any = None,
    ) -> Recommendation:
        """The top `k` items after `history` (raw item ids, oldest first); see `Query`. `user`: the raw
        user id, for models with user features (a user the dataset does not know: out of vocabulary)."""
        query = Query(history, k, timestamps, request_time, exclude_seen, exclude, allow, self.user_of(user))
        return self.recommend_many([query])[0]

    def recommend_many(self, queries: Sequence[Query]) -> list[Recommendation]:
        """`recommend` for many requests, scored in batches."""
        cases, unknown, sources = self.cases_of(queries)
        return self._answer(cases, unknown, sources)

    def recommend_users(
        self,
        raw_user_ids: Iterable[Any],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[Any] = (),
        allow: Sequence[Any] | None = None,
    ) -> list[Recommendation]:
        """The top `k` for known users of the dataset, from their whole history (every event, including
        those the evaluation held out). Raises DataError naming unknown users."""
        users = self.users_of(raw_user_ids)
        cases = self.user_cases(users, k, exclude_seen, self._indices(exclude), self._allowed(allow))
        source = "timestamps" if self.uses_time else "unused"
        return self._answer(cases, np.zeros(len(users), dtype=np.int64), [source] * len(users))

    def item(self, raw_id: Any) -> dict[str, Any]:
        """The item's raw id and text fields; DataError when it is not in the catalogue."""
        index = self.item_index.get(str(raw_id))
        if index is None:
            raise DataError(f"item {raw_id!r} is not in the catalogue of {self.run_name}")
        return {"id": self.item_raw_ids[index], **self.fields(index)}

    def fields(self, index: int) -> dict[str, Any]:
        return {name: values[index - 1] for name, values in self._fields.items()}

    # ---- raw ids -> cases ------------------------------------------------------------------------------
    def users_of(self, raw_user_ids: Iterable[Any]) -> np.ndarray:
        """[B] int64 dataset user indices; DataError naming (up to five) unknown users."""
        raw = list(raw_user_ids)
        users = [self.user_index.get(str(u), 0) for u in raw]
        missing = [u for u, index in zip(raw, users) if index == 0]
        if missing:
            shown = ", ".join(repr(u) for u in missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            raise DataError(
                f"unknown user{'s' if len(missing) > 1 else ''} {shown}: not in the dataset of {self.run_name}"
            )
        return np.asarray(users, dtype=np.int64)

    def user_of(self, raw_user_id: Any) -> int:
        """The dataset's index of a raw user id; 0 for None or a user it does not know (a new user)."""
        return 0 if raw_user_id is None else self.user_index.get(str(raw_user_id), 0)

    def _indices(self, raw_ids: Iterable[Any]) -> np.ndarray:
        """Item indices of the known raw ids (unknown ones dropped)."""
        found = (self.item_index.get(str(raw)) for raw in raw_ids)
        return np.fromiter((i for i in found if i is not None), dtype=np.int64)

    def _allowed(self, allow: Sequence[Any] | None) -> np.ndarray | None:
        return None if allow is None else self._indices(allow)

    def user_cases(
        self,
        users: np.ndarray,
        k: int,
        exclude_seen: bool = True,
        exclude: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
    ) -> Cases:
        """Cases for known users (indices [B]) from their whole history; the request time is their last event's."""
        self._check_k(k)
        full = self.dataset.sequences
        starts, ends = full.offsets[users], full.offsets[users + 1]
        lengths = ends - starts
        index = flat_ranges(starts, lengths)
        offsets = offsets_of(lengths)
        sequences = Sequences(full.items[index], full.timestamps[index], offsets)
        last = np.where(lengths > 0, full.timestamps[np.maximum(ends - 1, 0)], 0)
        exclude = np.zeros(0, dtype=np.int64) if exclude is None else exclude
        # each row's banned items: its history (when excluded), then `exclude`
        seen = lengths if exclude_seen else np.zeros_like(lengths)
        banned_offsets = offsets_of(seen + len(exclude))
        banned = np.empty(int(banned_offsets[-1]), dtype=np.int64)
        banned[flat_ranges(banned_offsets[:-1], seen)] = sequences.items[flat_ranges(offsets[:-1], seen)]
        banned[flat_ranges(banned_offsets[:-1] + seen, np.full(len(users), len(exclude)))] = np.tile(
            exclude, len(users)
        )
        return Cases(
            sequences,
            last.astype(np.int64),
            np.full(len(users), k, dtype=np.int64),
            banned,
            banned_offsets,
            [allowed] * len(users),
            users.astype(np.int64),
        )

    def cases_of(self, queries: Sequence[Query]) -> tuple[Cases, np.ndarray, list[str]]:
        """The queries in item indices, with each one's count of unknown history items and its time source."""
        items, times, requests, banned, allowed, unknown, sources = [], [], [], [], [], [], []
        for number, q in enumerate(queries):
            self.check(q, f"request {number}: " if len(queries) > 1 else "")
            found = [self.item_index.get(str(raw)) for raw in q.history]
            known = np.array([i is not None for i in found], dtype=bool)
            row = np.array([i for i in found if i is not None], dtype=np.int64)
            if q.timestamps is not None:
                stamps = np.asarray(q.timestamps, dtype=np.int64)[known] if len(known) else np.zeros(0, np.int64)
                source = "timestamps"
            else:
                stamps, source = np.arange(len(row), dtype=np.int64), "positions"
            default_time = int(stamps[-1]) if q.timestamps is not None and len(stamps) else len(row)
            items.append(row)
            times.append(stamps)
            requests.append(default_time if q.request_time is None else int(q.request_time))
            excluded = self._indices(q.exclude)
            banned.append(np.concatenate([row, excluded]) if q.exclude_seen else excluded)
            allowed.append(self._allowed(q.allow))
            unknown.append(int((~known).sum()))
            sources.append(source if self.uses_time else "unused")
        offsets = offsets_of(np.array([len(r) for r in items], dtype=np.int64))
        banned_offsets = offsets_of(np.array([len(b) for b in banned], dtype=np.int64))
        concat = lambda parts: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)  # noqa: E731
        cases = Cases(
            Sequences(concat(items), concat(times), offsets),
            np.asarray(requests, dtype=np.int64),
            np.array([q.k for q in queries], dtype=np.int64),
            concat(banned),
            banned_offsets,
            allowed,
            np.array([q.user for q in queries], dtype=np.int64),
        )
        return cases, np.asarray(unknown, dtype=np.int64), sources

    def check(self, query: Query, where: str = "") -> None:
        """DataError when a request cannot be answered as asked (its k, its timestamps)."""
        try:
            self._check_k(query.k)
        except DataError as exc:
            raise DataError(where + str(exc)) from None
        if query.timestamps is not None and len(query.timestamps) != len(query.history):
            raise DataError(
                f"{where}{len(query.timestamps)} timestamps for {len(query.history)} history items; give "
                f"one timestamp per item or none"
            )

    def user_query(self, raw_user_id: Any, k: int = 10) -> Query:
        """The `Query` of a known user's whole history (what `recommend_users` answers); DataError if unknown."""
        user = int(self.users_of([raw_user_id])[0])
        sequences = self.dataset.sequences
        events = slice(sequences.offsets[user], sequences.offsets[user + 1])
        raw = [self.item_raw_ids[i] for i in sequences.items[events].tolist()]
        times = sequences.timestamps[events]
        return Query(raw, k, times.tolist(), int(times[-1]) if len(times) else None, user=user)

    def fallbacks(self, cases: Cases) -> np.ndarray:
        """[B] bool: rows answered with the popularity list (no known history item; the popularity
        model itself ranks every row that way and has no fallback)."""
        return cases.empty & (self.model_name != "popularity")

    def _check_k(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DataError(f"k must be a positive integer, got {k!r}")
        if self.num_beams is not None and k > self.num_beams:
            raise DataError(
                f"k={k} is more than the {self.num_beams} beams of model {self.model_name!r}: a generative "
                f"model ranks only the items its beam search finds (train it with model.num_beams >= {k})"
            )

    # ---- scoring ---------------------------------------------------------------------------------------
    def top_k(self, cases: Cases, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """([B, K] item indices, [B, K] float scores) best first, K = the largest k of the cases;
        index 0 (score -inf) where a row has fewer than K items to return. With a ranker: the top
        `candidates` retrieved, then reordered by the ranker."""
        K = int(cases.ks.max(initial=1))
        if self.ranker is None:
            return self.retrieve(cases, K, batch_size)
        items, scores = self.retrieve(cases, max(K, self.candidates), batch_size)
        return self.reranked(cases, items, scores, K, RERANK_ROWS)

    @torch.no_grad()
    def reranked(
        self, cases: Cases, items: np.ndarray, scores: np.ndarray, K: int, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The retrieved `items` [B, R] (retrieval `scores` [B, R]) reordered by the ranker: [B, K] each.
        Fallback rows (no known history) keep the popularity order."""
        from genrec.eval.two_stage import standardised
        from genrec.models.ranking import Impressions

        assert self.ranker is not None
        out_items, out_scores = items[:, :K].copy(), scores[:, :K].copy()
        rows_to_rank = np.flatnonzero(~self.fallbacks(cases))
        for begin in range(0, len(rows_to_rank), batch_size):
            rows = rows_to_rank[begin : begin + batch_size]
            real = torch.from_numpy(items[rows] > 0)  # [b, R]
            candidates = torch.from_numpy(np.where(items[rows] > 0, items[rows], 1))
            impressions = Impressions.of(self._batch(cases, rows), candidates, self.ranker.device)
            score = self.ranker.combined(self.ranker(impressions), self.rerank_weights).float().cpu()
            if self.retrieval_weight:
                retrieved = torch.from_numpy(np.where(items[rows] > 0, scores[rows], 0)).float()
                score = standardised(score, real) + self.retrieval_weight * standardised(retrieved, real)
            score = torch.where(real, score, torch.tensor(float("-inf")))
            order, best = ranked(score, min(K, score.shape[1]), stable=True)
            width = best.shape[1]
            chosen = np.take_along_axis(items[rows], order, 1)
            chosen[~np.isfinite(best)] = 0
            out_items[rows, :width], out_scores[rows, :width] = chosen, best
        return out_items, out_scores

    def retrieve(self, cases: Cases, K: int, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The retrieval stage's top `K` of each case: ([B, K] item indices, [B, K] scores), as `top_k`."""
        batch_size = batch_size or auto_batch_size(self.num_items, self.max_len)
        out_items = np.zeros((len(cases), K), dtype=np.int64)
        out_scores = np.full((len(cases), K), -np.inf, dtype=np.float32)
        for begin in range(0, len(cases), batch_size):
            rows = np.arange(begin, min(begin + batch_size, len(cases)))
            items, scores = self._top_k_rows(cases, rows, K)
            out_items[rows, : items.shape[1]], out_scores[rows, : items.shape[1]] = items, scores
        return out_items, out_scores

    def _top_k_rows(self, cases: Cases, rows: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
        use_model = ~self.fallbacks(cases)[rows]
        batch = self._batch(cases, rows)
        banned_rows, banned_items = self._banned(cases, rows)
        if self.index is not None and all(cases.allowed[r] is None for r in rows):
            return self._search_index(batch, rows, use_model, banned_rows, banned_items, K)
        # masks and the top k run where the scores are (the model's device); only [B, K] comes back
        if use_model.any():
            scores = self.scorer(batch).float()
        else:
            scores = torch.empty(len(rows), self.num_items + 1, device=self.popularity.device)
        device = scores.device
        on = lambda array: torch.from_numpy(array).to(device)  # noqa: E731
        scores = torch.where(on(use_model)[:, None], scores, self.popularity.to(device)[None, :])
        scores[:, 0] = float("-inf")
        scores[on(banned_rows), on(banned_items)] = float("-inf")
        for position, r in enumerate(rows):
            if cases.allowed[r] is not None:
                keep = torch.full((self.num_items + 1,), float("-inf"), device=device)
                allowed = on(cases.allowed[r])
                keep[allowed] = scores[position, allowed]
                scores[position] = keep
        return ranked(scores, min(K, self.num_items), stable=self.generative)

    def _batch(self, cases: Cases, rows: np.ndarray) -> EvalBatch:
        """The rows' histories (their latest `max_len` events) as the evaluator hands them to a scorer."""
        offsets = cases.sequences.offsets
        starts, ends = offsets[rows], offsets[rows + 1]
        if self.max_len is not None:
            starts = np.maximum(starts, ends - self.max_len)
        items, times, lengths = padded_histories(cases.sequences, starts, ends)
        return EvalBatch(
            torch.from_numpy(cases.users[rows]),
            torch.from_numpy(items),
            torch.from_numpy(times),
            torch.from_numpy(lengths),
            torch.from_numpy(cases.request_times[rows]),
        )

    @staticmethod
    def _banned(cases: Cases, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `rows`, item indices) of every banned pair: flat, [P] each."""
        starts, ends = cases.banned_offsets[rows], cases.banned_offsets[rows + 1]
        items = cases.banned[flat_ranges(starts, ends - starts)]
        return np.repeat(np.arange(len(rows)), ends - starts), items

    def _search_index(
        self,
        batch: EvalBatch,
        rows: np.ndarray,
        use_model: np.ndarray,
        banned_rows: np.ndarray,
        banned_items: np.ndarray,
        K: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self.index is not None and isinstance(self.scorer, SequentialScorer)
        banned = [set() for _ in rows]
        for position, item in zip(banned_rows.tolist(), banned_items.tolist()):
            banned[position].add(item)
        items = np.zeros((len(rows), K), dtype=np.int64)
        scores = np.full((len(rows), K), -np.inf, dtype=np.float32)
        model_rows = np.flatnonzero(use_model)
        if len(model_rows):
            users = self.scorer.user_vectors(batch).float()[torch.from_numpy(model_rows)]
            found, values = self.index.search(users.cpu().numpy(), K, [banned[p] for p in model_rows])
            items[model_rows], scores[model_rows] = found, values
        for position in np.flatnonzero(~use_model):
            fallback = self.popularity.clone()
            fallback[0] = float("-inf")
            fallback[list(banned[position])] = float("-inf")
            found, values = ranked(fallback[None, :], min(K, self.num_items), stable=False)
            items[position, : found.shape[1]], scores[position, : found.shape[1]] = found[0], values[0]
        return items, scores

    def _answer(self, cases: Cases, unknown: np.ndarray, sources: list[str]) -> list[Recommendation]:
        items, scores = self.top_k(cases)
        fallbacks = self.fallbacks(cases)
        answers = []
        for r in range(len(cases)):
            chosen = [(int(i), float(s)) for i, s in zip(items[r, : cases.ks[r]], scores[r, : cases.ks[r]]) if i > 0]
            answers.append(
                Recommendation(
                    items=[RecommendedItem(self.item_raw_ids[i], s, self.fields(i)) for i, s in chosen],
                    fallback=bool(fallbacks[r]),
                    unknown_items=int(unknown[r]),
                    time_source=sources[r],
                    model=self.model_name,
                    run=self.run_name,
                )
            )
        return answers


def load_ranker_for(
    run: RunDir, config: RunConfig, dataset: Dataset, ranker_run: str | Path, device: str | None
) -> Ranker:
    """The ranker run `ranker_run`, checked to read the same data and split as `run`."""
    from genrec.config import to_dict
    from genrec.ranking_run import load_ranker

    ranker_config = RunDir.open(ranker_run).config()
    if to_dict(config.data) != to_dict(ranker_config.data) or to_dict(config.split) != to_dict(ranker_config.split):
        raise ConfigError(
            f"{run.path} and {ranker_run} read other data or splits: rerank with a ranker of the same data"
        )
    if device is not None:
        ranker_config = dataclasses.replace(
            ranker_config, train=dataclasses.replace(ranker_config.train, device=device)
        )
    return load_ranker(dataset, ranker_config, Path(ranker_run))


def ranked(scores: torch.Tensor, k: int, stable: bool) -> tuple[np.ndarray, np.ndarray]:
    """The k best of [B, N+1] scores as ([B, k] item indices, [B, k] scores), best first; equal scores
    in index order; index 0 where fewer than k scores are finite.

    stable: sort the whole row (exact tie order everywhere; generative scorers, whose -inf rows are
    cheap to sort); otherwise `topk`, then ties in index order within the k (a tie across the k-th
    place may keep either item).
    """
    if stable:
        values, items = torch.sort(scores, dim=1, descending=True, stable=True)
        values, items = values[:, :k].cpu().numpy(), items[:, :k].cpu().numpy()
    else:
        values, items = (t.cpu().numpy() for t in scores.topk(k, dim=1))
        order = np.lexsort((items, -values), axis=1)
        values, items = np.take_along_axis(values, order, 1), np.take_along_axis(items, order, 1)
    values, items = values.astype(np.float32), items.astype(np.int64)
    items[~np.isfinite(values)] = 0
    return items, values
