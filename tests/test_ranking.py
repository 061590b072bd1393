"""The ranking stage: early- and late-fusion rankers over a sequential backbone, the DLRM-style
baseline, their multitask training on ML-100K ratings, and their config errors."""

from __future__ import annotations

import json
from pathlib import Path

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
]


def train_ranker(capsys, ml100k, out, config: str, epochs: int) -> dict:
    args = [f"data.path={ml100k.path}", f"train.epochs={epochs}", *TINY_RANKER]
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


@pytest.mark.parametrize("config", ["hstu-rank-early", "rank-mlp"])
def test_early_fusion_and_the_baseline_train(ml100k, tmp_path, capsys, config):
    metrics = train_ranker(capsys, ml100k, tmp_path / config, config, epochs=1)
    check_heads(metrics["ranking"])


def test_a_rating_task_needs_ratings(tmp_path):
    from genrec.ranking_run import event_labels

    dataset, _ = walk_dataset(tmp_path)
    with pytest.raises(ConfigError, match="has no ratings"):
        event_labels(dataset, RankingConfig())
