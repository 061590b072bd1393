"""HLLM: item text, item embeddings (pooling, batching, cache), the InfoNCE loss, frozen and LoRA training.

The language models here are tiny random-weight Llama / BERT checkpoints written to disk with a word-level
tokenizer trained on the MovieLens titles, so everything runs offline on CPU in seconds.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from genrec.cli import main  # noqa: E402
from genrec.config import load_config  # noqa: E402
from genrec.errors import ConfigError, DataError, GenrecError  # noqa: E402
from genrec.items import llm_embed  # noqa: E402
from genrec.items.llm_embed import (  # noqa: E402
    TextEncoder,
    cached_item_embeddings,
    embed_catalogue,
    load_text_model,
    resolve_model_path,
    tokenize_texts,
)
from genrec.items.text import TextTemplate, render_item_texts  # noqa: E402
from genrec.models.hllm import HLLM, FrozenTextTower  # noqa: E402
from genrec.models.item_encoder import IDEmbedding  # noqa: E402
from genrec.models.item_features import FeatureTextTower  # noqa: E402
from genrec.runner import build_model, dataset_for, run, split_for  # noqa: E402
from genrec.train.losses import SharedPoolInfoNCE  # noqa: E402
from genrec.train.trainer import Trainer  # noqa: E402


# ---- item text ------------------------------------------------------------------------------------
def test_item_text_uses_the_official_hllm_format(ml100k, item_texts):
    assert item_texts.texts[0] == ""
    assert item_texts.texts[1] == (
        "Compress the following sentence into embedding: "
        "title: Toy Storyyear: 1995genres: Animation, Children's, Comedy"
    )
    assert item_texts.fields == ["title", "year", "genres"] and item_texts.empty == 0
    only_year = render_item_texts(ml100k, TextTemplate(prompt="", fields=["year"], separator=" | "))
    assert only_year.texts[1] == "year: 1995"
    assert only_year.empty == 2 and only_year.texts[267] == ""  # "unknown" and one other movie have no date
    assert only_year.checksum() != item_texts.checksum()
    with pytest.raises(DataError, match="names field 'plot'.*its item fields are: title, year, genres"):
        render_item_texts(ml100k, TextTemplate(fields=["title", "plot"]))


# ---- pooling and batching ---------------------------------------------------------------------------
def _one_by_one(model, tokenizer, texts: list[str]) -> list[torch.Tensor]:
    """Brute force: each text alone, no padding: [T, E] last hidden states."""
    with torch.no_grad():
        return [model(**tokenizer(t, return_tensors="pt")).last_hidden_state[0] for t in texts]


@pytest.mark.parametrize("pooling", ["last", "mean", "item-token"])
def test_pooling_of_a_padded_batch_matches_each_text_alone(tiny_llama, item_texts, pooling):
    model, tokenizer = load_text_model(resolve_model_path(str(tiny_llama)))
    assert tokenizer.pad_token is not None  # added: the tokenizer had none
    texts = [item_texts.texts[i] for i in (1, 2, 50, 267)]  # different lengths
    torch.manual_seed(1)
    encoder = TextEncoder(model, pooling, item_tokens=2).eval()
    tokens = tokenize_texts(texts, tokenizer, max_tokens=48)
    ids, lengths = tokens.padded(np.arange(len(texts)), tokenizer.pad_token_id)
    assert len(set(lengths.tolist())) > 1  # the batch really is padded
    with torch.no_grad():
        pooled = encoder(ids, lengths)  # [4, E]
    for row, text in enumerate(texts):
        if pooling == "item-token":
            with torch.no_grad():
                embeds = model.get_input_embeddings()(tokenizer(text, return_tensors="pt")["input_ids"])[0]
                inputs = torch.cat([embeds, encoder.item_tokens]).unsqueeze(0)
                expected = model(inputs_embeds=inputs).last_hidden_state[0, -1]
        else:
            (hidden,) = _one_by_one(model, tokenizer, [text])
            expected = hidden[-1] if pooling == "last" else hidden.mean(0)
        torch.testing.assert_close(pooled[row], expected, atol=1e-4, rtol=1e-4)


def test_length_sorted_batches_give_the_same_embeddings_as_one_at_a_time(tiny_bert, item_texts):
    model, tokenizer = load_text_model(resolve_model_path(str(tiny_bert)))
    encoder = TextEncoder(model, "mean")
    tokens = tokenize_texts(item_texts.texts[:200], tokenizer, max_tokens=64)
    fast = embed_catalogue(encoder, tokens, tokenizer.pad_token_id, batch_size=32, progress=False)
    naive = embed_catalogue(encoder, tokens, tokenizer.pad_token_id, batch_size=1, sort_by_length=False, progress=False)
    assert fast.shape == (200, 24) and not fast[0].any() and fast[1:].any(axis=1).all()
    np.testing.assert_allclose(fast, naive, atol=1e-4)


def test_texts_longer_than_the_limit_are_truncated_and_counted(tiny_llama, item_texts, caplog):
    _, tokenizer = load_text_model(resolve_model_path(str(tiny_llama)))
    with caplog.at_level(logging.WARNING, logger="genrec.items"):
        tokens = tokenize_texts(item_texts.texts[1:11], tokenizer, max_tokens=100, reserve=2, context=12)
    assert tokens.lengths.max() == 10 and tokens.truncated == int((tokens.lengths == 10).sum()) > 0
    assert f"{tokens.truncated} of 10 item texts are longer than 10 tokens" in caplog.text
    with pytest.raises(ConfigError, match="leaves no room for text after 4 item tokens"):
        tokenize_texts(["a"], tokenizer, max_tokens=4, reserve=4)


# ---- the cache ----------------------------------------------------------------------------------------
def test_the_embedding_cache_is_reused_and_invalidated(tiny_bert, item_texts, tmp_path, monkeypatch, caplog):
    location = resolve_model_path(str(tiny_bert))
    texts = item_texts.texts[:60]
    first, path = cached_item_embeddings(location, texts, "mean", 64, tmp_path, progress=False)
    assert first.shape == (60, 24) and path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]

    calls = []
    real_load = llm_embed.load_text_model
    monkeypatch.setattr(llm_embed, "load_text_model", lambda *a, **k: calls.append(1) or real_load(*a, **k))
    again, same = cached_item_embeddings(location, texts, "mean", 64, tmp_path, progress=False)
    assert same == path and calls == [] and np.array_equal(again, first)  # no model was loaded

    changed = [texts[0], texts[1] + " (director's cut)", *texts[2:]]
    other, other_path = cached_item_embeddings(location, changed, "mean", 64, tmp_path, progress=False)
    assert other_path != path and calls == [1] and not np.allclose(other[1], first[1])
    np.testing.assert_allclose(other[2:], first[2:], atol=1e-5)
    _, last_path = cached_item_embeddings(location, texts, "last", 64, tmp_path, progress=False)
    assert last_path not in (path, other_path) and calls == [1, 1]

    # a cache file that records another model is never used
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
    meta["model_identity"] = "another model"
    llm_embed._atomic_save(path, np.zeros_like(first), meta)
    with caplog.at_level(logging.WARNING, logger="genrec.items"):
        recomputed, _ = cached_item_embeddings(location, texts, "mean", 64, tmp_path, progress=False)
    assert "written with a different model_identity; recomputing" in caplog.text
    np.testing.assert_allclose(recomputed, first, atol=1e-6)
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically: no temporary files left behind


def test_bad_model_locations(tmp_path, tiny_llama):
    with pytest.raises(ConfigError, match="model directory not found"):
        resolve_model_path(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is not a transformers model: it has no config.json and no .gguf file"):
        resolve_model_path(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="no installed Python package 'no_such_model_pkg'"):
        resolve_model_path("python:no_such_model_pkg")
    with pytest.raises(ConfigError, match="GGUF file not found"):
        resolve_model_path(str(tiny_llama), gguf_file="model.Q4.gguf")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(GenrecError, match="could not load a transformers model from"):
        load_text_model(resolve_model_path(str(tmp_path / "broken")))


# ---- the loss -----------------------------------------------------------------------------------------
class _Table(torch.nn.Module):
    """A stand-in model: item vectors from a fixed table."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.num_items = table.shape[0] - 1

    def item_vectors(self, ids):
        return self.table[ids]


def test_infonce_matches_the_brute_force_formula():
    torch.manual_seed(0)
    table = F.normalize(torch.randn(31, 8), dim=-1)
    table[7] = table[3]  # item 7 is a duplicate of item 3
    users = F.normalize(torch.randn(5, 8), dim=-1)
    positives = torch.tensor([3, 3, 12, 30, 1])
    loss = SharedPoolInfoNCE(30, num_negatives=16, temperature=0.1, false_negative_threshold=0.99)
    torch.manual_seed(5)
    value = loss(users, positives, _Table(table))
    torch.manual_seed(5)
    pool = torch.randint(1, 31, (16,))
    candidates = sorted(set(positives.tolist()) | set(pool.tolist()))
    expected = []
    for u, p in zip(users, positives.tolist()):
        others = [c for c in candidates if c != p and not (F.cosine_similarity(table[c], table[p], dim=0) > 0.99)]
        logits = torch.stack([u @ table[c] for c in [p, *others]]) / 0.1
        expected.append(-torch.log_softmax(logits, 0)[0])
    torch.testing.assert_close(value, torch.stack(expected).mean())


def test_infonce_masks_the_duplicate_and_learns_a_clamped_temperature():
    table = F.normalize(torch.randn(11, 4), dim=-1)
    table[2] = table[1]
    users = table[[1]].clone()
    loss = SharedPoolInfoNCE(
        10, num_negatives=50, temperature=0.05, learn_temperature=True, false_negative_threshold=0.99
    )
    torch.manual_seed(0)
    masked = loss(users, torch.tensor([1]), _Table(table))
    plain = SharedPoolInfoNCE(10, num_negatives=50, temperature=0.05)
    torch.manual_seed(0)
    unmasked = plain(users, torch.tensor([1]), _Table(table))
    assert unmasked > masked + 0.5  # item 2 (identical to the positive) counts as a negative only without the filter
    masked.backward()
    assert loss.log_scale.grad is not None and loss.log_scale.requires_grad
    with torch.no_grad():
        loss.log_scale.fill_(10.0)
    loss(users, torch.tensor([1]), _Table(table))
    assert loss.temperature == pytest.approx(0.01)  # clamped at a scale of 100, as in HLLM


# ---- training -------------------------------------------------------------------------------------
TINY_HLLM = [
    "model.name=hllm",
    "model.user.max_len=20",
    "model.user.dim=16",
    "model.user.attention_dim=8",
    "model.user.value_dim=8",
    "model.item_llm.max_tokens=40",
    "train.batch_size=64",
    "train.device=cpu",
    "eval.ks=[10, 50]",
    "train.patience=null",
]


def _hllm_config(ml100k, model_dir, *overrides):
    return load_config(None, [f"data.path={ml100k.path}", f"model.item_llm.path={model_dir}", *TINY_HLLM, *overrides])


def test_frozen_hllm_trains_and_evaluates_from_its_run_directory(ml100k, tiny_llama, tmp_path, capsys):
    config = _hllm_config(ml100k, tiny_llama, "train.epochs=2", "train.loss.name=full")
    result = run(config, tmp_path / "run", progress=False)
    first_valid = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][1]
    assert first_valid["split"] == "valid" and result.metrics["test"]["num_users"] == 943
    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["ndcg@10"] == pytest.approx(result.metrics["test"]["ndcg@10"])
    assert main(["eval", str(tmp_path / "run"), "--json", "--cold", "5"]) == 0
    cold = json.loads(capsys.readouterr().out)
    assert cold["cold_max_train_count"] == 5 and 0 < cold["num_users"] < 943


def test_hllm_config_errors(ml100k, tiny_llama):
    with pytest.raises(ConfigError, match="item_llm.train=lora runs the item LLM on each batch's items only.*infonce"):
        _hllm_config(ml100k, tiny_llama, "model.item_llm.train=lora", "train.loss.name=sampled").check_trainable()
    with pytest.raises(ConfigError, match="pooling=item-token learns its tokens, so it needs end-to-end training"):
        build_model(ml100k, _hllm_config(ml100k, tiny_llama, "model.item_llm.pooling=item-token"), progress=False)
    with pytest.raises(ConfigError, match="HLLM's user model must be one of hstu, sasrec, llm, got 'popularity'"):
        load_config(None, ["model.name=hllm", "model.user.name=popularity"])
    with pytest.raises(ConfigError, match="infonce negatives come from the whole batch"):
        _hllm_config(ml100k, tiny_llama, "train.loss.name=infonce", "train.micro_batch_size=8")


def test_the_user_model_reads_and_scores_items_through_the_tower_as_its_item_encoder(ml100k, tiny_llama):
    model = build_model(ml100k, _hllm_config(ml100k, tiny_llama), progress=False).eval()
    user, tower = model.user_model, model.tower
    assert isinstance(tower, FrozenTextTower) and user.item_encoder is tower
    assert not any(isinstance(m, IDEmbedding) for m in model.modules())  # no ID table on either side
    ids = torch.tensor([[1, 5], [9, 0]])
    torch.testing.assert_close(model.item_vectors(ids), F.normalize(tower(ids), dim=-1, eps=1e-6))
    blocks_input = []
    user.blocks[0].register_forward_pre_hook(lambda module, args: blocks_input.append(args[0]))
    items = torch.tensor([[5, 9, 2, 0]])
    model.encode(items, torch.zeros_like(items), torch.tensor([3]))
    # HSTU scales the tower's vectors by sqrt(dim), as it does its own ID table's (user.dim=16)
    expected = tower(items) * 4.0 + user.position_embedding(torch.arange(4))
    assert user.packs_tokens(items.device)  # on a CPU the blocks read the real positions only, [T, D]
    torch.testing.assert_close(blocks_input[0], expected[items != 0])


@pytest.mark.parametrize("combine", ["sum", "concat"])
def test_hllm_combines_the_item_llm_embedding_with_the_items_side_features(ml100k, tiny_llama, combine):
    config = _hllm_config(
        ml100k, tiny_llama, "model.user.item_features=[genres, year]", f"model.user.feature_combine={combine}"
    )
    model = build_model(ml100k, config, progress=False).eval()
    encoder, tower = model.user_model.item_encoder, model.tower
    assert isinstance(encoder, FeatureTextTower) and isinstance(tower, FrozenTextTower) and encoder.tower is tower
    assert not any(isinstance(m, IDEmbedding) for m in model.modules())  # the text vector replaces the id
    ids = torch.tensor([[1, 5], [9, 0]])
    parts = [tower(ids), encoder.feature_vectors("genres", ids), encoder.feature_vectors("year", ids)]
    if combine == "sum":
        expected = sum(parts)
    else:
        expected = encoder.project(torch.cat(parts, dim=-1))
    expected = expected * (ids != 0)[..., None]
    torch.testing.assert_close(encoder(ids), expected)
    # the same vectors are read (history) and ranked (scoring side)
    torch.testing.assert_close(model.item_vectors(ids), F.normalize(expected, dim=-1, eps=1e-6))
    # two items with the same text embedding but other genres get other vectors
    with torch.no_grad():
        tower.table[2] = tower.table[1]
    genres = encoder.values("genres")
    assert not torch.equal(genres[1], genres[2])
    vectors = encoder(torch.tensor([1, 2]))
    assert not torch.allclose(vectors[0], vectors[1])
    # a training step reaches the feature tables and the tower's projection, not the frozen embeddings
    model.train()
    items = torch.tensor([[5, 9, 2, 0]])
    hidden = model.encode(items, torch.zeros_like(items), torch.tensor([3]))
    (hidden[0, :3] @ model.item_vectors(torch.arange(1, 20)).T).logsumexp(-1).sum().backward()
    assert encoder.tables["genres"].weight.grad.abs().sum() > 0 and tower.project.weight.grad is not None
    assert not tower.table.requires_grad


def test_hllm_reads_the_users_features_as_prefix_tokens(ml100k, tiny_llama, tmp_path):
    from genrec.models.user_features import UserFeaturePrefix

    config = _hllm_config(ml100k, tiny_llama, "model.user.user_features=[gender, age]", "train.epochs=1")
    model = build_model(ml100k, config, progress=False).eval()
    prefix = model.user_model.user_prefix
    assert isinstance(prefix, UserFeaturePrefix) and prefix.num_tokens == 2
    # two users with other features and the same history get other user vectors; no user: the OOV tokens
    genders = ml100k.users["gender"].to_pylist()  # row u = user u + 1
    a, b = 1, next(u + 1 for u, g in enumerate(genders) if g != genders[0])
    items = torch.tensor([[5, 9, 2], [5, 9, 2]])
    times, lengths = torch.zeros_like(items), torch.tensor([3, 3])
    with torch.no_grad():
        vectors = model.encode(items, times, lengths, users=torch.tensor([a, b]))[:, -1]
        again = model.encode(items, times, lengths, users=torch.tensor([a, a]))[:, -1]
        unknown = model.encode(items[:1], times[:1], lengths[:1])[:, -1]
    assert not torch.allclose(vectors[0], vectors[1]) and torch.allclose(again[0], again[1])
    assert not torch.allclose(unknown[0], vectors[0])
    # trains, and the prefix is rebuilt from the dataset when the run is evaluated again
    result = run(config, tmp_path / "run", progress=False)
    assert main(["eval", str(tmp_path / "run"), "--json", "-q"]) == 0
    assert result.metrics["test"]["num_users"] == 943


def test_an_end_to_end_lora_step_trains_adapters_and_item_tokens_only(ml100k, tiny_llama, monkeypatch):
    pytest.importorskip("peft")
    config = _hllm_config(
        ml100k,
        tiny_llama,
        "model.item_llm.train=lora",
        "model.item_llm.pooling=item-token",
        "model.item_llm.lora_targets=[q_proj, v_proj]",
        "train.loss.name=infonce",
        "train.loss.num_negatives=16",
        "train.loss.learn_temperature=true",
        "train.batch_size=8",
        "train.epochs=1",
        "model.user.max_len=5",
    )
    dataset = dataset_for(config.data)
    model = build_model(dataset, config, progress=False)
    assert isinstance(model, HLLM)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    saved = model.state_dict()  # checkpoints hold the adapters, not a copy of the pretrained model
    assert not any("base_layer" in k for k in saved) and any("lora_A" in k for k in saved)
    assert "user_model.item_encoder.encoder.item_tokens" in saved
    assert any("lora_A" in n for n in trainable) and any(n.endswith("item_tokens") for n in trainable)
    assert not any("q_proj.base_layer" in n for n in trainable)  # the LLM's own weights stay frozen
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = Trainer(model, split_for(dataset, config), config, None, progress=False)
    one_step = [next(trainer.objective.batches(1))]
    embedded = []
    real_embed = model.tower._embed
    monkeypatch.setattr(model.tower, "_embed", lambda ids: embedded.append(ids) or real_embed(ids))
    trainer.train_epoch(1, batches=one_step)
    assert len(embedded) == 2  # the history, then the loss's candidates ...
    ids = torch.cat(embedded)
    assert len(ids) == len(torch.unique(ids))  # ... and no item went through the LLM twice in the step
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("lora_B" in n for n in changed) and any(n.endswith("item_tokens") for n in changed)
    assert changed <= trainable
    assert trainer.objective.extra.log_scale.item() != pytest.approx(math.log(1 / 0.05))  # the temperature learned too

    calls = []
    real = embed_catalogue
    monkeypatch.setattr("genrec.models.hllm.embed_catalogue", lambda *a, **k: calls.append(1) or real(*a, **k))
    metrics = trainer.evaluate("valid")
    assert metrics["num_users"] == 943 and calls == [1]  # the catalogue is embedded once per evaluation
    trainer.evaluate("test")
    assert calls == [1]  # the weights did not change: the same table serves the test pass
    lora_b = next(n for n in trainable if "lora_B" in n)
    weights = model.state_dict()
    weights[lora_b] = weights[lora_b] + 1.0
    model.load_state_dict(weights)  # strict: the frozen base weights come back from the model itself
    assert torch.equal(dict(model.named_parameters())[lora_b], weights[lora_b])
    trainer.evaluate("test")
    assert calls == [1, 1]  # loading weights (the best checkpoint) invalidates it


def test_a_causal_lm_user_model_reads_item_embeddings_as_inputs_embeds(ml100k, tiny_llama, tmp_path):
    """HLLM's user LLM: the tiny Llama reads the frozen item tower's vectors; its own weights train."""
    config = load_config(
        None,
        [
            f"data.path={ml100k.path}",
            "model.name=hllm",
            f"model.item_llm.path={tiny_llama}",
            "model.item_llm.max_tokens=40",
            f"model.user={{name: llm, path: '{tiny_llama}', max_len: 10}}",
            "train.batch_size=64",
            "train.device=cpu",
            "eval.ks=[10]",
            "train.epochs=1",
            "train.loss.name=full",
        ],
    )
    dataset = dataset_for(config.data)
    model = build_model(dataset, config, progress=False)
    assert model.normalised and model.user_model.dim == 32  # the tower projects to the LLM's width
    items = torch.tensor([[5, 9, 2, 0], [7, 0, 0, 0]])
    hidden = model.encode(items, torch.zeros_like(items), torch.tensor([3, 1]))  # [2, 4, 32]
    shorter = model.encode(items[:1, :3], torch.zeros(1, 3, dtype=torch.long), torch.tensor([3]))
    torch.testing.assert_close(hidden[0, :3], shorter[0], atol=1e-5, rtol=1e-4)  # padding never leaks in
    before = model.user_model.llm.layers[0].self_attn.q_proj.weight.detach().clone()
    trainer = Trainer(model, split_for(dataset, config), config, None, progress=False)
    trainer.train_epoch(1, batches=[next(trainer.objective.batches(1))])
    assert not torch.equal(model.user_model.llm.layers[0].self_attn.q_proj.weight, before)  # full fine-tuning
    assert 0 <= trainer.evaluate("valid")["ndcg@10"] <= 1


def test_a_causal_lm_is_also_a_sequential_model_over_id_embeddings(ml100k, tiny_llama, tmp_path):
    config = load_config(
        None,
        [
            f"data.path={ml100k.path}",
            f"model={{name: llm, path: '{tiny_llama}', max_len: 8}}",
            "train.batch_size=128",
            "train.epochs=1",
            "train.device=cpu",
            "eval.ks=[10]",
            "train.loss.name=full",
        ],
    )
    result = run(config, tmp_path / "llm", progress=False)
    assert result.metrics["test"]["num_users"] == 943 and 0 <= result.metrics["test"]["ndcg@10"] <= 1
