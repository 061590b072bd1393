"""The HTTP service of a trained run (FastAPI; `pip install 'genrec[serve]'`; `genrec serve RUN`).

    POST /recommend                         {"history": [...], "timestamps": [...], "k": 10, ...}
    GET  /users/{user_id}/recommendations   ?k=10
    GET  /items/{item_id}
    GET  /healthz                           200 while the process answers
    GET  /readyz                            200 once the model is loaded, 503 before
    GET  /docs                              the OpenAPI page

Requests that arrive together are scored together: a `Batcher` collects them for at most
`max_wait_ms` (or until `max_batch` are waiting) and runs one batch through the model in a worker
thread, so throughput grows with concurrency while the event loop keeps accepting requests. A
request the model cannot answer as asked gets a 4xx naming the field; nothing a client sends stops
the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi import Query as QueryParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from starlette.exceptions import HTTPException as StarletteHTTPException

from genrec.errors import GenrecError
from genrec.serve.recommender import Query, Recommendation, Recommender

log = logging.getLogger("genrec.serve")

ItemId = str | StrictInt  # raw ids travel as strings; integers are accepted for integer catalogues


class RecommendRequest(BaseModel):
    """The body of POST /recommend."""

    model_config = ConfigDict(extra="forbid")

    history: list[ItemId] = Field(default_factory=list, description="raw item ids, oldest first")
    timestamps: list[StrictInt] | None = Field(None, description="unix seconds, one per history item")
    request_time: StrictInt | None = Field(None, description="the time to recommend for (default: the last event's)")
    k: StrictInt = Field(10, ge=1, le=1000)
    exclude_seen: StrictBool = True
    exclude: list[ItemId] = Field(default_factory=list, description="raw item ids never to return")
    allow: list[ItemId] | None = Field(None, description="if given, return only these raw item ids")
    user: ItemId | None = Field(
        None, description="the raw user id, read by models with user features (unknown: out of vocabulary)"
    )


class Item(BaseModel):
    model_config = ConfigDict(extra="allow")  # the item's text fields (title, ...) follow id and score

    id: str
    score: float


class RecommendResponse(BaseModel):
    items: list[Item]
    fallback: bool
    unknown_items: int
    time_source: str
    model: str
    run: str


def response_of(recommendation: Recommendation) -> dict[str, Any]:
    body = recommendation.to_dict()
    body["items"] = [{**item, "id": str(item["id"])} for item in body["items"]]
    return body


class Batcher:
    """Collects concurrent queries and answers them with one `recommend_many` call per batch."""

    def __init__(self, recommender: Recommender, max_batch: int = 64, max_wait_ms: float = 2.0) -> None:
        self.recommender = recommender
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue[tuple[Query, asyncio.Future]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genrec-model")
        self.task: asyncio.Task | None = None
        self.batches = self.answered = 0  # for /readyz: the mean batch size says whether batching works

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=True)

    async def submit(self, query: Query) -> Recommendation:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((query, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            batch = [(q, f) for q, f in batch if not f.done()]  # the client may have gone away
            if not batch:
                continue
            try:
                answers = await loop.run_in_executor(
                    self.executor, self.recommender.recommend_many, [q for q, _ in batch]
                )
            except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, never the loop
                log.exception("a batch of %d requests failed", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches, self.answered = self.batches + 1, self.answered + len(batch)
            for (_, future), answer in zip(batch, answers):
                if not future.done():
                    future.set_result(answer)


class State:
    """What the app serves: the recommender once loaded (in a thread, so /healthz answers meanwhile)."""

    def __init__(self, load: Callable[[], Recommender], max_history: int, max_batch: int, max_wait_ms: float) -> None:
        self.load = load
        self.max_history = max_history
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.recommender: Recommender | None = None
        self.batcher: Batcher | None = None
        self.error: str | None = None

    def ready_recommender(self) -> tuple[Recommender, Batcher]:
        if self.recommender is None or self.batcher is None:
            raise HTTPException(503, self.error or "the model is still loading")
        return self.recommender, self.batcher


def create_app(
    load: Callable[[], Recommender] | Recommender,
    max_history: int = 10_000,
    max_batch: int = 64,
    max_wait_ms: float = 2.0,
) -> FastAPI:
    """The service of one recommender (or of the one `load()` returns, loaded at start-up).

    max_history: the longest history a request may send (longer ones get a 422).
    max_batch, max_wait_ms: how concurrent requests are batched through the model.
    """
    loader = load if callable(load) and not isinstance(load, Recommender) else (lambda: load)
    state = State(loader, max_history, max_batch, max_wait_ms)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def load_model() -> None:
            try:
                recommender = state.load()
            except Exception as exc:  # noqa: BLE001 - reported by /readyz and the log
                state.error = f"the model failed to load: {exc}"
                log.error(state.error)
                return
            loop.call_soon_threadsafe(_started, recommender)

        def _started(recommender: Recommender) -> None:
            state.batcher = Batcher(recommender, state.max_batch, state.max_wait_ms)
            state.batcher.start()
            state.recommender = recommender
            log.info("serving %s (%s, %d items)", recommender.run_name, recommender.model_name, recommender.num_items)

        threading.Thread(target=load_model, name="genrec-load", daemon=True).start()
        yield
        if state.batcher is not None:
            await state.batcher.stop()

    app = FastAPI(title="genrec", summary="Recommendations from a trained genrec run", lifespan=lifespan)
    app.state.genrec = state

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
        message = f"{where}: {first.get('msg', 'invalid request')}"
        return JSONResponse(
            status_code=422,
            content={"error": message, "detail": [{k: e.get(k) for k in ("loc", "msg", "type")} for e in errors]},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state.recommender is None:
            return JSONResponse(
                status_code=503, content={"status": "failed" if state.error else "loading", "error": state.error}
            )
        r = state.recommender
        b = state.batcher
        return JSONResponse(
            {
                "status": "ready",
                "model": r.model_name,
                "run": r.run_name,
                "items": r.num_items,
                "index": None if r.index is None else r.index.kind,
                "requests": b.answered if b else 0,
                "batches": b.batches if b else 0,
            }
        )

    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(body: RecommendRequest) -> dict[str, Any]:
        recommender, batcher = state.ready_recommender()
        if len(body.history) > state.max_history:
            raise HTTPException(
                422,
                f"history: {len(body.history)} items, more than this server's limit of "
                f"{state.max_history} (genrec serve --max-history)",
            )
        query = Query(
            body.history,
            body.k,
            body.timestamps,
            body.request_time,
            body.exclude_seen,
            body.exclude,
            body.allow,
            recommender.user_of(body.user),
        )
        return response_of(await answer(recommender, batcher, query))

    @app.get("/users/{user_id}/recommendations", response_model=RecommendResponse)
    async def user_recommendations(user_id: str, k: int = QueryParam(10, ge=1, le=1000)) -> dict[str, Any]:
        recommender, batcher = state.ready_recommender()
        try:
            query = recommender.user_query(user_id, k)
        except GenrecError as exc:
            raise HTTPException(404, str(exc)) from None
        return response_of(await answer(recommender, batcher, query))

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, Any]:
        recommender, _ = state.ready_recommender()
        try:
            found = recommender.item(item_id)
        except GenrecError as exc:
            raise HTTPException(404, str(exc)) from None
        return {**found, "id": str(found["id"])}

    return app


async def answer(recommender: Recommender, batcher: Batcher, query: Query) -> Recommendation:
    """The batched answer to one query; a query the model cannot answer as asked is a 422."""
    try:
        recommender.check(query)
    except GenrecError as exc:
        raise HTTPException(422, str(exc)) from None
    return await batcher.submit(query)
