"""The ranking stage: early- and late-fusion rankers over a sequential backbone, the DLRM-style
baseline, their multitask training on ML-100K ratings, and their config errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.errors import ConfigError
from genrec.models.hstu import HSTU
from genrec.models.hstu_config import HSTUConfig
from genrec.models.ranking import EarlyFusionRanker, EmbeddingRanker, Impressions, LateFusionRanker
from genrec.models.ranking_config import RankingConfig, TaskConfig
from genrec.models.sasrec import SASRec
from genrec.models.sasrec_config import SASRecConfig

from conftest import walk_dataset

NUM_ITEMS = 30
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "ml-100k"


def histories(B: int = 3, L: int = 6) -> tuple[torch.Tensor, ...]:
    """users [B], items/timestamps [B, L] right-padded, lengths [B], candidates [B, 4], times [B]
    (the fields of `Impressions`)."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([L, 2, 4])[:B]
    items = torch.randint(1, NUM_ITEMS + 1, (B, L), generator=gen)
    items = items * (torch.arange(L)[None, :] < lengths[:, None])
    times = torch.arange(1, L + 1)[None, :].expand(B, -1) * 1000 * (items != 0)
    candidates = torch.randint(1, NUM_ITEMS + 1, (B, 4), generator=gen)
    return torch.arange(1, B + 1), items, times, lengths, candidates, torch.full((B,), 10**4)


def backbones() -> list:
    hstu = HSTU(NUM_ITEMS, HSTUConfig(max_len=12, dim=16, attention_dim=8, value_dim=8, dropout=0.0))
    sasrec = SASRec(NUM_ITEMS, SASRecConfig(max_len=12, dim=16, num_heads=2, dropout=0.0))
    return [hstu, sasrec]


@pytest.mark.parametrize("fusion", ["early", "late", "none"])
def test_rankers_give_one_logit_per_candidate_and_task(fusion):
    config = RankingConfig(fusion=fusion)
    for backbone in backbones():
        ranker = (
            EmbeddingRanker(5, NUM_ITEMS, config)
            if fusion == "none"
            else (EarlyFusionRanker if fusion == "early" else LateFusionRanker)(backbone, config)
        )
        logits = ranker.eval()(Impressions(*histories()))
        assert logits.shape == (3, 4, 2) and torch.isfinite(logits).all()
        assert ranker.combined(logits).shape == (3, 4)


@pytest.mark.parametrize("index", [0, 1])
def test_early_fusion_reads_the_candidate_and_nothing_after_it(index):
    ranker = EarlyFusionRanker(backbones()[index], RankingConfig(fusion="early")).eval()
    users, items, times, lengths, candidates, now = histories()
    base = ranker(Impressions(users, items, times, lengths, candidates, now))
    # the same candidates in another order: each one's output follows it (no mixing across candidates)
    swapped = ranker(Impressions(users, items, times, lengths, candidates.flip(1), now))
    torch.testing.assert_close(swapped, base.flip(1))
    # another candidate: another output
    other = ranker(Impressions(users, items, times, lengths, candidates % NUM_ITEMS + 1, now))
    assert not torch.allclose(other, base)
    # junk after each history's end (where the padding was) changes nothing
    junk = items.clone()
    junk[junk == 0] = 7
    torch.testing.assert_close(ranker(Impressions(users, junk, times, lengths, candidates, now)), base)
    # ... but the history does count
    older = items.clone()
    older[:, 0] = older[:, 0] % NUM_ITEMS + 1
    assert not torch.allclose(ranker(Impressions(users, older, times, lengths, candidates, now)), base)


def test_late_fusion_scores_the_user_vector_with_each_candidate():
    ranker = LateFusionRanker(backbones()[0], RankingConfig(fusion="late")).eval()
    users, items, times, lengths, candidates, now = histories()
    base = ranker(Impressions(users, items, times, lengths, candidates, now))
    one = ranker(Impressions(users[:1], items[:1], times[:1], lengths[:1], candidates[:1, 2:3], now[:1]))
    torch.testing.assert_close(one[0, 0], base[0, 2])


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown kind 'ranking'"):
        TaskConfig("like", kind="ranking")
    with pytest.raises(ConfigError, match="regression head reads a value"):
        TaskConfig("rating", kind="regression", label="rating>=4")
    with pytest.raises(ConfigError, match="unknown fusion"):
        RankingConfig(fusion="middle")
    with pytest.raises(ConfigError, match="share a name"):
        RankingConfig(tasks=[TaskConfig("a"), TaskConfig("a")])
    with pytest.raises(ConfigError, match="regression head reads a value"):
        TaskConfig("seen", kind="regression", label="event")
    with pytest.raises(ConfigError, match="unknown sampler 'random'"):
        RankingConfig(negative_sampler="random")
    with pytest.raises(ConfigError, match="needs fusion early or late"):
        RankingConfig(fusion="none", negative_sampler="hard")
    with pytest.raises(ConfigError, match="model.select: 'rating/gauc' is no choice; valid: like/gauc"):
        RankingConfig(select="rating/gauc")


def test_the_checkpoint_is_chosen_by_the_first_binary_heads_gauc_by_default():
    assert RankingConfig().selection_metric == "like/gauc"
    assert RankingConfig(select="like/auc").selection_metric == "like/auc"
    assert RankingConfig(select="backbone").selection_metric is None
    regression_only = RankingConfig(tasks=[TaskConfig("rating", "regression", "rating")])
    assert regression_only.selection_metric is None


def ranking_objective(ml100k, **config):  # noqa: ANN001, ANN201
    from genrec.config import TrainConfig
    from genrec.data.splits import leave_one_out
    from genrec.ranking_run import event_labels
    from genrec.train.distributed import DistContext
    from genrec.train.ranking_objective import RankingObjective

    ranking = RankingConfig(
        backbone=HSTUConfig(max_len=12, dim=16, attention_dim=8, value_dim=8, dropout=0.0), negatives=50, **config
    )
    from genrec.models.ranking import build_ranker

    ranker = build_ranker(ml100k, ranking, None, progress=False)
    split = leave_one_out(ml100k.sequences)
    labels = event_labels(ml100k, ranking)
    objective = RankingObjective(ranker, split.train, TrainConfig(), 0, DistContext(), torch.device("cpu"), labels)
    batch = next(iter(objective.batches(1)))
    return objective, batch.next_item_examples(ranker.max_len), split


def test_the_event_label_is_one_for_every_real_event(ml100k):
    from genrec.train.ranking_objective import task_labels

    labels = task_labels([TaskConfig("like"), TaskConfig("event", label="event")], ml100k.interactions)
    assert labels.shape == (ml100k.interactions.num_rows, 2) and (labels[:, 1] == 1).all()
    assert 0 < labels[:, 0].mean() < 1  # like is not every event


def test_popularity_negatives_follow_the_training_counts(ml100k):
    torch.manual_seed(0)
    objective, examples, split = ranking_objective(ml100k, negative_sampler="popularity")
    negatives = objective.sample_negatives(examples)
    assert negatives.shape == (len(examples.targets), 50)
    counts = torch.from_numpy(np.bincount(split.train.items, minlength=ml100k.num_items + 1))
    # only items with training events are drawn, and a drawn item is popular on average
    assert (counts[negatives] > 0).all()
    assert counts[negatives].float().mean() > 2 * counts[1:].float().mean()
    uniform, _, _ = ranking_objective(ml100k)
    assert counts[uniform.sample_negatives(examples)].float().mean() < counts[negatives].float().mean()


def test_hard_negatives_come_from_the_backbones_top_items(ml100k):
    objective, examples, _ = ranking_objective(ml100k, negative_sampler="hard", hard_pool=20)
    negatives = objective.sample_negatives(examples)
    pool = objective.hard_pool(examples)  # [E, 20]
    assert pool.shape == (len(examples.targets), 20)
    assert (pool != examples.targets[:, None]).all()  # the target is never its own negative
    assert (negatives[:, :, None] == pool[:, None, :]).any(-1).all()


def run_cli(capsys, *args) -> tuple[int, str, str]:
    from genrec.cli import main

    code = main(list(map(str, args)))
    out, err = capsys.readouterr()
    return code, out, err


# a ranker that trains in seconds on ML-100K (the backbone tiny, few impressions per window)
TINY_RANKER = [
    "model.backbone.max_len=12",
    "model.backbone.dim=16",
    "model.backbone.attention_dim=8",
    "model.backbone.value_dim=8",
    "model.backbone.num_blocks=1",
    "model.examples_per_window=4",
    "model.dim=16",
    "model.hidden=16",
    "train.batch_size=128",
    "train.windows=latest",
    "train.loss.num_negatives=16",
    "train.device=cpu",
    "train.patience=null",
    "train.lr=0.005",  # two epochs: the heads must learn fast
]


def train_ranker(capsys, ml100k, out, config: str, epochs: int, *extra: str) -> dict:
    args = [f"data.path={ml100k.path}", f"train.epochs={epochs}", *TINY_RANKER, *extra]
    sets = [x for a in args for x in ("--set", a)]
    code, _, _ = run_cli(capsys, "train", CONFIGS / f"{config}.yaml", *sets, "--out", out, "--quiet")
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


def check_heads(ranking: dict) -> None:
    for which in ("valid", "test"):
        heads = ranking[which]
        for key in ("like/auc", "like/gauc", "like/log_loss"):
            assert 0 <= heads[key] <= 1 or key == "like/log_loss" and heads[key] > 0
        assert heads["like/gauc_users"] > 100 and heads["rating/rmse"] > 0


def test_late_fusion_trains_evaluates_and_reranks_a_retrieval_run(ml100k, tmp_path, capsys):
    metrics = train_ranker(capsys, ml100k, tmp_path / "late", "hstu-rank-late", epochs=2)
    check_heads(metrics["ranking"])
    # the like head separates liked targets from sampled items better than chance
    assert metrics["ranking"]["test"]["like/auc"] > 0.6
    code, out, _ = run_cli(capsys, "eval", tmp_path / "late", "--json", "--quiet")
    assert code == 0 and json.loads(out)["ranking"] == pytest.approx(metrics["ranking"]["test"])

    retrieval = tmp_path / "sasrec"
    sets = [f"data.path={ml100k.path}", "train.epochs=1", "train.device=cpu", "model.max_len=20", "model.dim=16"]
    code, _, _ = run_cli(
        capsys,
        "train",
        CONFIGS / "sasrec.yaml",
        *[x for s in sets for x in ("--set", s)],
        "--out",
        retrieval,
        "--quiet",
    )
    assert code == 0
    code, out, _ = run_cli(capsys, "rank", retrieval, tmp_path / "late", "--k", "10", "--candidates", "50", "--json")
    result = json.loads(out)
    alone = json.loads((retrieval / "metrics.json").read_text())["test"]
    assert result["retrieval"]["ndcg@10"] == pytest.approx(alone["ndcg@10"])
    two = result["two-stage"]
    assert 0 <= two["ndcg@10"] <= two["hr@10"] <= two["recall@50"] <= 1 and two["num_users"] == alone["num_users"]
    code, out, _ = run_cli(capsys, "rank", retrieval, tmp_path / "late", "--task", "like=1,rating=0.2", "--json")
    assert code == 0 and "two-stage" in json.loads(out)
    code, _, err = run_cli(capsys, "rank", retrieval, tmp_path / "late", "--task", "click")
    assert code != 0 and "no head named 'click'" in err
    code, _, err = run_cli(capsys, "export", tmp_path / "late", "--out", tmp_path / "export")
    assert code != 0 and "no item embedding table" in err
    # blended with the retrieval score at a weight that swamps the ranker: the retrieval order again
    code, out, _ = run_cli(capsys, "rank", retrieval, tmp_path / "late", "--task", "event=1,retrieval=1e9", "--json")
    blended = json.loads(out)
    assert blended["two-stage"]["ndcg@10"] == pytest.approx(alone["ndcg@10"], abs=1e-9)

    check_selection(tmp_path / "late")
    check_stored_tables(capsys, tmp_path / "late", tmp_path / "tables")
    check_recommender_with_ranker(retrieval, tmp_path / "late")
    # genrec recommend --ranker: the same two stages, written to Parquet
    import pyarrow.parquet as pq

    users = tmp_path / "users.txt"
    users.write_text("1\n2\n")
    args = ["recommend", retrieval, "--users", users, "--k", "5", "--json"]
    code, _, err = run_cli(capsys, *args, "--task", "like", "--out", tmp_path / "no.parquet")
    assert code != 0 and "give --ranker RANKER_RUN" in err
    code, _, _ = run_cli(
        capsys, *args, "--ranker", tmp_path / "late", "--candidates", "20", "--out", tmp_path / "two.parquet"
    )
    table = pq.read_table(tmp_path / "two.parquet").to_pydict()
    assert code == 0 and len(table["item"]) == 10
    from genrec.serve.recommender import Recommender

    two = Recommender.from_run(retrieval, ranker_run=tmp_path / "late", candidates=20)
    assert table["item"][:5] == [i.id for i in two.recommend_users(["1"], k=5)[0].items]


def check_selection(run: Path) -> None:
    """The best checkpoint is the validation with the highest like/gauc (the default model.select)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r.get("split") == "valid" and not r.get("final")]
    assert len(valid) == 2 and all("like/gauc" in r and "ndcg@10" in r for r in valid)
    best = max(valid, key=lambda r: r["like/gauc"])
    final = [r for r in records if r.get("split") == "valid" and r.get("final")][0]
    assert final["epoch"] == best["epoch"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["ranking"]["valid"]["like/gauc"] == pytest.approx(best["like/gauc"])


def check_stored_tables(capsys, run: Path, out: Path) -> None:
    """genrec export --users: the MLP over the stored vectors gives the live ranker's logits."""
    from genrec.ranking_run import load_ranker
    from genrec.run_dir import RunDir
    from genrec.runner import dataset_of_run
    from genrec.serve.stored_ranking import StoredLateFusion

    code, printed, _ = run_cli(capsys, "export", run, "--users", "--out", out, "--json")
    assert code == 0 and json.loads(printed)["num_users"] == 943
    stored = StoredLateFusion.load(out)
    config = RunDir.open(run).config()
    dataset = dataset_of_run(RunDir.open(run), config)
    ranker = load_ranker(dataset, config, run)
    users = torch.tensor([1, 2, 500, 943])
    candidates = torch.tensor([[1, 50, 7], [3, 3, 1682], [10, 20, 30], [5, 6, 7]])
    seq = dataset.sequences
    rows = [seq.items[seq.offsets[u] : seq.offsets[u + 1]] for u in users.tolist()]
    times = [seq.timestamps[seq.offsets[u] : seq.offsets[u + 1]] for u in users.tolist()]
    L = max(map(len, rows))
    pad = lambda parts: torch.tensor(np.stack([np.pad(p, (0, L - len(p))) for p in parts]))  # noqa: E731
    lengths = torch.tensor([len(r) for r in rows])
    now = torch.tensor([int(t[-1]) for t in times])
    with torch.no_grad():
        live = ranker(Impressions(users, pad(rows), pad(times), lengths, candidates, now))
    torch.testing.assert_close(stored(users, candidates), live, rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="candidate item indices must be in 1..1682"):
        stored(users[:1], torch.tensor([[1683]]))


def check_recommender_with_ranker(retrieval: Path, ranker_run: Path) -> None:
    """Recommender(ranker=...): the retrieval top R, reordered by the ranker's first head."""
    from genrec.serve.recommender import Recommender

    plain = Recommender.from_run(retrieval)
    two = Recommender.from_run(retrieval, ranker_run=ranker_run, candidates=20)
    retrieved = {item.id for item in plain.recommend_users(["1"], k=20)[0].items}
    answer = two.recommend_users(["1"], k=10)[0]
    ids = [item.id for item in answer.items]
    scores = [item.score for item in answer.items]
    assert len(ids) == 10 and set(ids) <= retrieved and scores == sorted(scores, reverse=True)
    # the scores are the ranker's like probabilities of the candidates, and the list is their top 10
    query = two.user_query("1")
    cases, _, _ = two.cases_of([query])
    batch = two._batch(cases, np.array([0]))
    pool = torch.tensor([[two.item_index[str(i)] for i in sorted(retrieved, key=str)]])
    with torch.no_grad():
        likes = two.ranker.combined(two.ranker(Impressions.of(batch, pool, two.ranker.device)))[0]
    expected = sorted(likes.tolist(), reverse=True)[:10]
    assert scores == pytest.approx(expected, abs=1e-6)
    # a retrieval weight that swamps the ranker: the retrieval order
    swamped = Recommender.from_run(retrieval, ranker_run=ranker_run, candidates=20, rerank={"retrieval": 1e9})
    assert [i.id for i in swamped.recommend_users(["1"], k=10)[0].items] == [
        i.id for i in plain.recommend_users(["1"], k=10)[0].items
    ]


@pytest.mark.parametrize("config", ["hstu-rank-early", "rank-mlp"])
def test_early_fusion_and_the_baseline_train(ml100k, tmp_path, capsys, config):
    metrics = train_ranker(capsys, ml100k, tmp_path / config, config, epochs=1)
    check_heads(metrics["ranking"])
    # only a late-fusion ranker has per-user vectors to store
    code, _, err = run_cli(capsys, "export", tmp_path / config, "--users", "--out", tmp_path / "tables")
    assert code != 0 and "late-fusion ranker run" in err


def test_a_rankers_backbone_reads_side_features(ml100k, tmp_path, capsys):
    from genrec.models.item_features import FeatureItemEncoder
    from genrec.ranking_run import load_ranker
    from genrec.run_dir import RunDir

    features = ["model.backbone.item_features=[genres, year]", "model.backbone.user_features=[gender, age]"]
    metrics = train_ranker(capsys, ml100k, tmp_path / "run", "hstu-rank-early", 1, *features)
    check_heads(metrics["ranking"])
    ranker = load_ranker(ml100k, RunDir.open(tmp_path / "run").config(), tmp_path / "run")
    assert isinstance(ranker.backbone.item_encoder, FeatureItemEncoder)
    assert ranker.backbone.item_encoder.names == ["genres", "year"] and ranker.backbone.user_prefix.num_tokens == 2


def test_a_rating_task_needs_ratings(tmp_path):
    from genrec.ranking_run import event_labels

    dataset, _ = walk_dataset(tmp_path)
    with pytest.raises(ConfigError, match="has no ratings"):
        event_labels(dataset, RankingConfig())
