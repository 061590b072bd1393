"""Recommendations from trained runs: the evaluator's ranking in raw ids, odd input, batch files, ANN indexes."""

import asyncio
import dataclasses
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from genrec.cli import main
from genrec.config import load_config
from genrec.data.dataset import flat_ranges
from genrec.errors import DataError
from genrec.eval.evaluator import EvalBatch, padded_histories
from genrec.runner import run, split_for
from genrec.serve import Query, Recommender
from genrec.serve.batch import recommend_to_parquet
from genrec.serve.index import ItemIndex

from conftest import _write_tiny_llama, walk_dataset

TINY = {
    "hstu": ["model.name=hstu", "model.max_len=20", "model.dim=16", "model.attention_dim=8", "model.value_dim=8"],
    "sasrec": ["model.name=sasrec", "model.max_len=20", "model.dim=16"],
    "popularity": ["model.name=popularity"],
}
TIGER = [
    "model.name=tiger",
    "model.max_len=5",
    "model.dim=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.head_dim=16",
    "model.ffn_dim=64",
    "model.dropout=0.0",
    "model.user_tokens=8",
    "model.num_beams=10",
]


def _train(tmp_path_factory, name: str, overrides: list[str]):
    config = load_config(
        None,
        [
            *overrides,
            "train.epochs=1",
            "train.batch_size=128",
            "train.device=cpu",
            "eval.ks=[10]",
            "eval.max_cases=200",
        ],
    )
    return run(config, tmp_path_factory.mktemp(name) / "run", progress=False).run_dir


@pytest.fixture(scope="module")
def ml_runs(ml100k, tmp_path_factory):
    return {name: _train(tmp_path_factory, name, [f"data.path={ml100k.path}", *extra]) for name, extra in TINY.items()}


@pytest.fixture(scope="module")
def tiger_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("walk")
    dataset, sid_file = walk_dataset(folder, users=60)
    return _train(
        tmp_path_factory, "tiger", [f"data.path={dataset.path}", f"model.sid_file={sid_file}", *TIGER, "train.lr=0.01"]
    )


@pytest.fixture(scope="module")
def hllm_run(ml100k, tiny_llama, tmp_path_factory):
    return _train(
        tmp_path_factory,
        "hllm",
        [
            f"data.path={ml100k.path}",
            "model.name=hllm",
            f"model.item_llm.path={tiny_llama}",
            "model.user.max_len=20",
            "model.user.dim=16",
            "model.user.attention_dim=8",
            "model.user.value_dim=8",
            "model.item_llm.max_tokens=40",
        ],
    )


@pytest.fixture(scope="module")
def sid_llm_run(tmp_path_factory):
    pytest.importorskip("peft")
    from genrec.llm.prompts import PromptConfig

    folder = tmp_path_factory.mktemp("walk-llm")
    dataset, sid_file = walk_dataset(folder, users=60)
    words = [PromptConfig().next_item, PromptConfig().title_to_sid, PromptConfig().sid_to_title]
    llama = _write_tiny_llama(folder / "llama", words)
    return _train(
        tmp_path_factory,
        "sid-llm",
        [
            f"data.path={dataset.path}",
            "model.name=sid-llm",
            f"model.path={llama}",
            f"model.sid_file={sid_file}",
            "model.max_len=5",
            "model.num_beams=10",
            "train.lr=0.01",
        ],
    )


def evaluator_scores(rec: Recommender, which: str = "test", cases: int = 40):
    """The masked [C, N+1] scores the evaluator ranks for the first `cases` cases of a split, with the
    cases' raw histories, timestamps and request times."""
    split = split_for(rec.dataset, rec.config)
    chosen = split.cases(which)
    starts, ends = chosen.history_start[:cases], chosen.history_end[:cases]
    items, times, lengths = padded_histories(split.sequences, starts, ends)
    batch = EvalBatch(
        torch.from_numpy(chosen.users[:cases]),
        torch.from_numpy(items),
        torch.from_numpy(times),
        torch.from_numpy(lengths),
        torch.from_numpy(chosen.target_timestamps[:cases]),
    )
    scores = rec.scorer(batch).float().clone()
    rows = np.repeat(np.arange(len(starts)), ends - starts)
    scores[
        torch.from_numpy(rows), torch.from_numpy(split.sequences.items[flat_ranges(starts, ends - starts)])
    ] = -np.inf
    scores[:, 0] = -np.inf
    raw = rec.item_raw_ids
    queries = [
        Query(
            [raw[i] for i in items[r, : lengths[r]]],
            10,
            times[r, : lengths[r]].tolist(),
            int(chosen.target_timestamps[r]),
            user=int(chosen.users[r]),
        )
        for r in range(len(starts))
    ]
    return scores, queries


def assert_is_top_k_of(answers, scores: torch.Tensor, rec: Recommender, k: int = 10):
    """Each answer lists the k best items of its row of `scores`, best first, with their scores."""
    for answer, row in zip(answers, scores):
        finite = int(torch.isfinite(row).sum())
        best = row.topk(min(k, finite)).values
        got = torch.tensor([item.score for item in answer.items])
        assert len(got) == len(best)
        torch.testing.assert_close(got, best, rtol=1e-5, atol=1e-5)
        indices = torch.tensor([rec.item_index[str(item.id)] for item in answer.items])
        torch.testing.assert_close(row[indices], got, rtol=1e-5, atol=1e-5)
        assert len(set(indices.tolist())) == len(indices)


@pytest.mark.parametrize("name", ["hstu", "sasrec", "popularity"])
def test_recommend_returns_the_evaluators_top_k(ml_runs, name):
    rec = Recommender.from_run(ml_runs[name])
    scores, queries = evaluator_scores(rec)
    answers = rec.recommend_many(queries)
    assert_is_top_k_of(answers, scores, rec)
    assert all(not a.fallback and a.unknown_items == 0 and a.model == name for a in answers)
    assert answers[0].time_source == ("timestamps" if name == "hstu" else "unused")
    first = answers[0].items[0]
    assert set(first.fields) == {"title", "year", "genres"}
    assert rec.item(first.id)["title"] == first.fields["title"]


def test_generative_recommend_is_the_beam_search_ranking(tiger_run):
    rec = Recommender.from_run(tiger_run)
    scores, queries = evaluator_scores(rec, cases=30)
    answers = rec.recommend_many(queries)
    assert_is_top_k_of(answers, scores, rec)
    with pytest.raises(DataError, match="k=11 is more than the 10 beams"):
        rec.recommend(queries[0].history, k=11)


@pytest.mark.parametrize("fixture", ["hllm_run", "sid_llm_run"])
def test_recommend_returns_the_evaluators_top_k_for_llm_models(fixture, request):
    rec = Recommender.from_run(request.getfixturevalue(fixture))
    scores, queries = evaluator_scores(rec, cases=20)
    assert_is_top_k_of(rec.recommend_many(queries), scores, rec)


def test_known_users_get_the_ranking_of_their_whole_history(ml_runs, ml100k):
    rec = Recommender.from_run(ml_runs["hstu"])
    raw_users = ml100k.user_raw_ids()[1:6]
    by_user = rec.recommend_users(raw_users, k=20)
    by_query = rec.recommend_many([rec.user_query(u, 20) for u in raw_users])
    for a, b in zip(by_user, by_query):
        assert [i.id for i in a.items] == [i.id for i in b.items]
    seen = set(rec.user_query(raw_users[0]).history)
    assert len(seen) > 10 and not seen & {i.id for i in by_user[0].items}
    # the known-user path and the query path agree on exclusions too
    top = [by_user[0].items[0].id, by_user[1].items[1].id]
    for options in ({"exclude": top}, {"exclude_seen": False}, {"exclude": top, "exclude_seen": False}):
        queries = [dataclasses.replace(rec.user_query(u, 20), **options) for u in raw_users]
        for a, b in zip(rec.recommend_users(raw_users, k=20, **options), rec.recommend_many(queries)):
            assert [i.id for i in a.items] == [i.id for i in b.items]
            assert not set(options.get("exclude", ())) & {i.id for i in a.items}
    with pytest.raises(DataError, match="unknown users 'nobody', 'ghost'"):
        rec.recommend_users([raw_users[0], "nobody", "ghost"])


def test_odd_histories_are_answered(ml_runs):
    rec = Recommender.from_run(ml_runs["hstu"])
    history = rec.user_query(rec.dataset.user_raw_ids()[1]).history
    empty = rec.recommend([], k=5)
    assert empty.fallback and [i.id for i in empty.items] == [i.id for i in rec.recommend(["no-such-item"], k=5).items]
    popular = torch.sort(rec.popularity[1:], descending=True, stable=True).indices[:5] + 1  # ties: first item first
    assert [rec.item_index[str(i.id)] for i in empty.items] == popular.tolist()
    mixed = rec.recommend(["x", *history[-5:], "y"], k=5)
    assert mixed.unknown_items == 2 and not mixed.fallback
    assert [i.id for i in mixed.items] == [i.id for i in rec.recommend(history[-5:], k=5).items]
    # a history longer than max_len (20) is read from its latest 20 events, and all of it is excluded
    long, latest = (
        rec.recommend(history, k=10, exclude_seen=False),
        rec.recommend(history[-20:], k=10, exclude_seen=False),
    )
    assert [i.id for i in long.items] == [i.id for i in latest.items]
    assert not set(history) & {i.id for i in rec.recommend(history, k=50).items}
    assert rec.recommend(history[-5:]).time_source == "positions"
    # exclude and allow
    top = [i.id for i in rec.recommend(history[-5:], k=3).items]
    assert top[0] not in [i.id for i in rec.recommend(history[-5:], k=3, exclude=[top[0]]).items]
    allowed = rec.recommend(history[-5:], k=10, allow=[top[2], top[1], "unknown"])
    assert [i.id for i in allowed.items] == top[1:3]
    with pytest.raises(DataError, match="2 timestamps for 3 history items"):
        rec.recommend(history[:3], timestamps=[1, 2])
    with pytest.raises(DataError, match="k must be a positive integer"):
        rec.recommend(history[:3], k=0)


def test_batch_file_matches_the_api(ml_runs, tmp_path):
    rec = Recommender.from_run(ml_runs["sasrec"])
    summary = recommend_to_parquet(rec, tmp_path / "recs.parquet", k=7, batch_size=100, progress=False)
    table = pq.read_table(tmp_path / "recs.parquet")
    assert summary.requests == rec.dataset.num_users and summary.rows == table.num_rows == 7 * rec.dataset.num_users
    assert table.column_names == ["user", "rank", "item", "score"]
    rows = table.to_pylist()
    some = rec.dataset.user_raw_ids()[1:300:37]
    for user, answer in zip(some, rec.recommend_users(some, k=7)):
        mine = sorted((r for r in rows if r["user"] == user), key=lambda r: r["rank"])
        assert [r["rank"] for r in mine] == list(range(1, 8))
        assert [r["item"] for r in mine] == [i.id for i in answer.items]
        np.testing.assert_allclose([r["score"] for r in mine], [i.score for i in answer.items], rtol=1e-5)
    # requests that are not users, as JSON lines
    history = rec.user_query(some[0]).history
    lines = [{"id": "a", "history": history}, {"history": []}, {"id": "c", "history": ["nope", *history[:3]]}]
    (tmp_path / "h.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    summary = recommend_to_parquet(rec, tmp_path / "h.parquet", k=4, histories=tmp_path / "h.jsonl", progress=False)
    got = pq.read_table(tmp_path / "h.parquet").to_pylist()
    assert summary.fallback == 1 and [r["user"] for r in got] == ["a"] * 4 + ["2"] * 4 + ["c"] * 4
    assert [r["item"] for r in got[:4]] == [i.id for i in rec.recommend(history, k=4).items]
    with pytest.raises(Exception, match="exists"):
        recommend_to_parquet(rec, tmp_path / "h.parquet", k=4, histories=tmp_path / "h.jsonl", progress=False)
    (tmp_path / "bad.jsonl").write_text('{"history": ["1"]}\n{"histroy": ["1"]}\n')
    with pytest.raises(DataError, match="bad.jsonl, line 2: unknown field 'histroy'"):
        recommend_to_parquet(rec, tmp_path / "bad.parquet", histories=tmp_path / "bad.jsonl", progress=False)
    assert not (tmp_path / "bad.parquet").exists() and not list(tmp_path.glob(".bad.parquet*"))


def test_recommend_command(ml_runs, tmp_path, capsys):
    users = tmp_path / "users.txt"
    users.write_text("1\n2\nnobody\n")
    out = tmp_path / "recs.parquet"
    assert (
        main(["recommend", str(ml_runs["hstu"]), "--users", str(users), "--k", "3", "--out", str(out), "--json", "-q"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["requests"] == 2 and report["rows"] == 6 and report["skipped_users"] == 1
    assert main(["recommend", str(ml_runs["hstu"]), "--out", str(ml_runs["hstu"] / "config.json"), "-q"]) == 2
    assert "config.json" in capsys.readouterr().err


def test_exact_index_gives_the_full_ranking_and_hnsw_finds_most_of_it(ml_runs, tmp_path):
    pytest.importorskip("faiss")
    assert main(["export", str(ml_runs["hstu"]), "--out", str(tmp_path / "exact"), "--index", "exact", "-q"]) == 0
    assert main(["export", str(ml_runs["hstu"]), "--out", str(tmp_path / "hnsw"), "--index", "hnsw", "-q"]) == 0
    full = Recommender.from_run(ml_runs["hstu"])
    exact = Recommender.from_run(ml_runs["hstu"], index=tmp_path / "exact")
    hnsw = Recommender.from_run(ml_runs["hstu"], index=tmp_path / "hnsw" / "index.faiss")
    assert exact.index.kind == "exact" and hnsw.index.kind == "hnsw"
    users = full.dataset.user_raw_ids()[1:60]
    truth = full.recommend_users(users, k=10)
    for a, b in zip(truth, exact.recommend_users(users, k=10)):
        np.testing.assert_allclose([i.score for i in a.items], [i.score for i in b.items], rtol=1e-4, atol=1e-5)
    found = hnsw.recommend_users(users, k=10)
    recall = np.mean([len({i.id for i in a.items} & {i.id for i in b.items}) / 10 for a, b in zip(truth, found)])
    assert recall > 0.9
    for user, answer in zip(users, found):  # the history is excluded through the index too
        assert not set(full.user_query(user).history) & {i.id for i in answer.items}
    assert exact.recommend([], k=3).fallback
    # an index of another catalogue is refused
    other = ItemIndex.build(np.random.default_rng(0).standard_normal((10, 16)).astype(np.float32), "exact")
    (tmp_path / "other").mkdir()
    other.save(tmp_path / "other")
    with pytest.raises(DataError, match="the index holds 10 items"):
        Recommender.from_run(ml_runs["hstu"], index=tmp_path / "other")


def test_index_search_filters_and_refetches():
    pytest.importorskip("faiss")
    vectors = np.eye(6, dtype=np.float32)[:, :6] + 0.01
    index = ItemIndex.build(vectors, "exact")
    user = np.array([[6, 5, 4, 3, 2, 1]], dtype=np.float32)
    items, scores = index.search(user, 3, [{1, 2, 3}])
    assert items.tolist() == [[4, 5, 6]] and np.all(np.diff(scores[0]) <= 0)
    items, scores = index.search(user, 3, [{1, 2, 3, 4, 5}])
    assert items.tolist() == [[6, 0, 0]] and np.isinf(scores[0, 1:]).all()


# ---- the HTTP service -----------------------------------------------------------------------------------
def _ready_client(app):
    from fastapi.testclient import TestClient

    client = TestClient(app)
    client.__enter__()
    for _ in range(200):
        if client.get("/readyz").status_code == 200:
            return client
        time.sleep(0.05)
    raise AssertionError("the app never became ready")


def test_service_endpoints_and_errors(ml_runs):
    pytest.importorskip("fastapi")
    from genrec.serve.app import create_app

    rec = Recommender.from_run(ml_runs["hstu"])
    client = _ready_client(create_app(rec, max_history=50))
    try:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json()["model"] == "hstu"
        history = [str(i) for i in rec.user_query("1").history[-10:]]
        body = client.post("/recommend", json={"history": history, "k": 5}).json()
        expected = rec.recommend(history, k=5)
        assert [i["id"] for i in body["items"]] == [str(i.id) for i in expected.items]
        assert body["items"][0]["title"] == expected.items[0].fields["title"]
        assert body["fallback"] is False and body["time_source"] == "positions" and body["run"] == "run"
        by_user = client.get("/users/1/recommendations", params={"k": 4}).json()
        assert [i["id"] for i in by_user["items"]] == [str(i.id) for i in rec.recommend_users(["1"], k=4)[0].items]
        assert client.get(f"/items/{history[0]}").json()["title"] == rec.item(history[0])["title"]
        assert client.post("/recommend", json={"history": []}).json()["fallback"] is True
        assert client.post("/recommend", json={"history": ["nope", history[0]]}).json()["unknown_items"] == 1
        bad = [
            ({"history": history, "k": 0}, 422, "k: Input should be greater than or equal to 1"),
            ({"history": history, "k": 1001}, 422, "k: Input should be less than or equal to 1000"),
            ({"history": history, "k": "5"}, 422, "k: Input should be a valid integer"),
            ({"history": "1,2"}, 422, "history: Input should be a valid list"),
            ({"history": history, "colour": 1}, 422, "colour: Extra inputs are not permitted"),
            ({"history": history, "timestamps": [1]}, 422, "1 timestamps for 10 history items"),
            ({"history": ["1"] * 51}, 422, "history: 51 items, more than this server's limit of 50"),
        ]
        for payload, status, message in bad:
            response = client.post("/recommend", json=payload)
            assert response.status_code == status and message in response.json()["error"], (payload, response.text)
        broken = client.post("/recommend", content=b'{"history": [', headers={"content-type": "application/json"})
        assert broken.status_code == 422 and "JSON" in broken.json()["error"]
        assert client.get("/users/nobody/recommendations").status_code == 404
        assert "not in the catalogue" in client.get("/items/nope").json()["error"]
        assert client.get("/users/1/recommendations", params={"k": 0}).status_code == 422
        assert client.post("/recommend", json={"history": history}).status_code == 200  # still serving
    finally:
        client.__exit__(None, None, None)


def test_concurrent_requests_share_batches(ml_runs):
    pytest.importorskip("fastapi")
    from genrec.serve.app import Batcher

    rec = Recommender.from_run(ml_runs["sasrec"])
    calls = []
    original = rec.recommend_many
    rec.recommend_many = lambda queries: calls.append(len(queries)) or original(queries)
    histories = [[str(i) for i in rec.user_query(str(u)).history[-8:]] for u in range(1, 41)]

    async def many():
        batcher = Batcher(rec, max_batch=16, max_wait_ms=50)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(Query(h, 3)) for h in histories))
        finally:
            await batcher.stop()

    answers = asyncio.run(many())
    assert sum(calls) == 40 and max(calls) == 16 and len(calls) <= 4  # batched, at most max_batch at a time
    for history, answer in zip(histories, answers):
        assert [i.id for i in answer.items] == [i.id for i in original([Query(history, 3)])[0].items]


def test_genrec_serve_answers_over_http(ml_runs, tmp_path):
    pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "genrec", "serve", str(ml_runs["hstu"]), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if urllib.request.urlopen(f"{url}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                assert server.poll() is None, server.communicate()[1][-2000:]
                time.sleep(0.1)
        request = urllib.request.Request(
            f"{url}/recommend",
            data=json.dumps({"history": ["50", "181"], "k": 3}).encode(),
            headers={"content-type": "application/json"},
        )
        body = json.loads(urllib.request.urlopen(request, timeout=10).read())
        rec = Recommender.from_run(ml_runs["hstu"])
        assert [i["id"] for i in body["items"]] == [str(i.id) for i in rec.recommend(["50", "181"], k=3).items]
        server.send_signal(signal.SIGTERM)
        # a graceful stop (uvicorn finishes, then re-raises the signal it caught, so the status says SIGTERM)
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Finished server process" in server.communicate()[1]
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def test_serve_refuses_a_missing_run_in_one_line(tmp_path, capsys):
    pytest.importorskip("uvicorn")
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
