"""TIGER: next-item examples, the trie's level tables, constrained beam search, train-and-generate."""

from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import pytest
import torch

from genrec.config import load_config
from genrec.data.batching import TrainSequences
from genrec.errors import ConfigError, DataError
from genrec.items.beam_search import beams_to_scores, constrained_beam_search
from genrec.items.semantic_ids import SemanticIds
from genrec.items.trie import SIDTrie
from genrec.run_dir import RunDir
from genrec.runner import build_model, evaluate_split, run, scorer_for, split_for
from genrec.serve.export import export_item_embeddings
from genrec.train.trainer import Trainer

from conftest import walk_dataset

pytest.importorskip("transformers")

from genrec.models.build import build_tiger  # noqa: E402
from genrec.models.tiger import TIGER, TIGERConfig  # noqa: E402

TINY = dict(dim=32, num_layers=1, num_heads=2, head_dim=16, ffn_dim=64, dropout=0.0, user_tokens=8, num_beams=10)


def _random_sids(n: int, sizes: list[int], seed: int = 0) -> SemanticIds:
    rng = np.random.default_rng(seed)
    every = np.array(list(itertools.product(*[range(s) for s in sizes])))
    codes = every[rng.choice(len(every), size=n, replace=False)]
    return SemanticIds(np.vstack([np.full((1, len(sizes)), -1), codes]), sizes)


# ---- training examples --------------------------------------------------------------------------------
def test_next_item_examples_are_every_target_with_its_latest_history(ml100k):
    batch = TrainSequences(ml100k.sequences, max_len=30).collate([1, 5, 9])
    examples = batch.next_item_examples(history_len=4)
    expected = []
    for row in range(3):
        items = batch.items[row, : batch.lengths[row]].tolist()
        for t in range(len(items)):
            expected.append((int(batch.users[row]), items[max(0, t - 3) : t + 1], int(batch.targets[row, t])))
    got = [
        (int(u), h[:n].tolist(), int(y))
        for u, h, n, y in zip(examples.users, examples.history, examples.lengths, examples.targets)
    ]
    assert got == expected
    assert (examples.history[examples.lengths < 4][:, -1] == 0).all()  # right-padded


# ---- the trie as tables, and the beam search ----------------------------------------------------------
def test_level_tables_agree_with_the_trie_on_every_prefix():
    sids = _random_sids(40, [3, 4, 5], seed=1)
    tokens = (sids.codes[1:] + np.array([100, 200, 300])).tolist()  # arbitrary token ids per level
    trie = SIDTrie(tokens, range(1, 41))
    tables = trie.level_tables()
    frontier = {(): 0}
    for level in range(3):
        following = {}
        for prefix, node in frontier.items():
            allowed = [int(tables.tokens[level][j]) for j in torch.nonzero(tables.children[level][node] >= 0).flatten()]
            assert allowed == trie.allowed(prefix)
            for j, token in enumerate(tables.tokens[level].tolist()):
                if tables.children[level][node, j] >= 0:
                    following[(*prefix, token)] = int(tables.children[level][node, j])
        frontier = following
    assert {tuple(s) for s in tokens} == set(frontier)  # the leaves are exactly the SIDs
    for sid, leaf in frontier.items():
        assert tables.leaf_items[leaf].tolist() == trie.items(sid)


def _fixed_step(table: dict[tuple[int, ...], torch.Tensor], vocab: int, batch: int):
    """A step function whose log-probs depend on the prefix only (a stand-in model)."""
    prefixes: list[tuple[int, ...]] = []

    def step(tokens, parents):
        nonlocal prefixes
        prefixes = (
            [()] * batch if tokens is None else [(*prefixes[p], int(t)) for p, t in zip(parents.tolist(), tokens)]
        )
        return torch.stack([table.setdefault(p, torch.randn(vocab).log_softmax(-1)) for p in prefixes])

    return step


def test_beam_search_with_enough_beams_ranks_every_sid_by_its_exact_probability():
    torch.manual_seed(0)
    sids = _random_sids(30, [4, 4, 4])
    tokens = sids.codes[1:] + np.array([0, 4, 8])
    trie = SIDTrie(tokens.tolist(), range(1, 31))
    tables = trie.level_tables()
    table: dict = {}
    beams = constrained_beam_search(_fixed_step(table, 12, batch=2), tables, batch_size=2, num_beams=64)
    for row in range(2):  # the step ignores the row, so both rows agree
        brute = sorted(
            ((sum(float(table[tuple(s[:i])][s[i]]) for i in range(3)), tuple(s)) for s in tokens.tolist()), reverse=True
        )
        valid = beams.leaves[row] >= 0
        assert int(valid.sum()) == 30  # 64 beams asked, only 30 SIDs exist: the rest are empty
        assert [tuple(t) for t in beams.tokens[row][valid].tolist()] == [s for _, s in brute]
        torch.testing.assert_close(beams.scores[row][valid], torch.tensor([p for p, _ in brute]))
        assert torch.isinf(beams.scores[row][~valid]).all()


def test_narrow_beams_are_valid_sorted_and_become_item_scores():
    torch.manual_seed(1)
    sids = _random_sids(50, [4, 4, 4], seed=2)
    sids.codes[7] = sids.codes[8]  # a collision: items 7 and 8 share a SID
    tokens = sids.codes[1:] + np.array([0, 4, 8])
    trie = SIDTrie(tokens.tolist(), range(1, 51))
    tables = trie.level_tables()
    beams = constrained_beam_search(_fixed_step({}, 12, batch=3), tables, batch_size=3, num_beams=5)
    assert beams.leaves.shape == (3, 5) and (beams.leaves >= 0).all()
    assert (beams.scores[:, :-1] >= beams.scores[:, 1:]).all()
    for sid in beams.tokens.reshape(-1, 3).tolist():
        assert trie.items(sid)  # every beam spells a real item
    scores = beams_to_scores(beams, tables, num_items=50)
    assert scores.shape == (3, 51)
    for row in range(3):
        finite = torch.isfinite(scores[row])
        items = {i for leaf in beams.leaves[row].tolist() for i in tables.leaf_items[leaf].tolist() if i}
        assert set(torch.nonzero(finite).flatten().tolist()) == items
        if 7 in items:
            assert scores[row, 7] == scores[row, 8]  # colliding items tie


# ---- the model ----------------------------------------------------------------------------------------
def test_generated_beams_score_the_sequence_likelihood_of_the_teacher_forced_model():
    """The cached beam search and the training forward agree on every SID's log-probability."""
    torch.manual_seed(0)
    sids = _random_sids(20, [3, 3, 3])
    model = TIGER(sids, TIGERConfig(**{**TINY, "num_beams": 27})).eval()
    users, history, lengths = torch.tensor([3, 5]), torch.tensor([[1, 2, 3], [4, 0, 0]]), torch.tensor([3, 1])
    beams = model.generate_next(users, history, lengths, model.level_tables())
    ids, mask = model.encoder_inputs(users, history, lengths)
    for row in range(2):
        valid = beams.leaves[row] >= 0
        assert int(valid.sum()) == 20
        targets = beams.tokens[row][valid]  # [20, 3]
        decoder_input = torch.cat([torch.zeros_like(targets[:, :1]), targets[:, :-1]], dim=1)
        logits = model.t5(
            input_ids=ids[row : row + 1].expand(20, -1),
            attention_mask=mask[row : row + 1].expand(20, -1),
            decoder_input_ids=decoder_input,
        ).logits
        exact = logits.log_softmax(-1).gather(2, targets[..., None]).squeeze(-1).sum(1)
        torch.testing.assert_close(beams.scores[row][valid], exact, rtol=1e-4, atol=1e-4)


def test_encoder_input_is_user_then_history_sids_then_eos():
    sids = SemanticIds(np.array([[-1, -1], [0, 1], [1, 0]]), [2, 2])
    model = TIGER(sids, TIGERConfig(**TINY))
    ids, mask = model.encoder_inputs(torch.tensor([9, 2]), torch.tensor([[2, 1], [1, 0]]), torch.tensor([2, 1]))
    code = lambda level, c: 2 + 8 + 2 * level + c  # noqa: E731  pad, eos, 8 user tokens, then the codes
    assert ids.tolist() == [
        [2 + 9 % 8, code(0, 1), code(1, 0), code(0, 0), code(1, 1), 1],
        [2 + 2, code(0, 0), code(1, 1), 1, 0, 0],
    ]
    assert mask.tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]


def test_tiger_learns_a_predictable_sequence_through_the_shared_trainer(tmp_path):
    dataset, sid_file = walk_dataset(tmp_path)
    overrides = [
        f"data.path={dataset.path}",
        "model.name=tiger",
        f"model.sid_file={sid_file}",
        "model.max_len=5",
        "eval.ks=[1,5,10]",
        "train.epochs=12",
        "train.batch_size=32",
        "train.lr=0.01",
        "train.eval_every=4",
        "model.eval_users_per_pass=64",
        *[f"model.{k}={v}" for k, v in TINY.items()],
    ]
    config = load_config(None, overrides)
    result = run(config, tmp_path / "run", progress=False)
    assert result.metrics["test"]["hr@1"] > 0.8  # a random ranking of 24 items gets ~0.04
    assert (result.run_dir / "best.pt").is_file() and (result.run_dir / "metrics.jsonl").is_file()
    # evaluating the run directory again (as `genrec eval` does) gives the same numbers
    split = split_for(dataset, config)
    again = evaluate_split(
        scorer_for(dataset, split, config, result.run_dir), dataset, split, "test", config, progress=False
    )
    assert again["hr@1"] == result.metrics["test"]["hr@1"] and again["ndcg@10"] == result.metrics["test"]["ndcg@10"]
    with pytest.raises(ConfigError, match="generates semantic IDs and has no item embedding table"):
        export_item_embeddings(result.run_dir)
    # the checkpoint only fits the SIDs it was trained on
    other = tmp_path / "other.index.json"
    table = json.loads(sid_file.read_text())
    table["i0"], table["i1"] = table["i1"], table["i0"]
    other.write_text(json.dumps(table))
    changed = load_config(None, [*overrides, f"model.sid_file={other}"])
    with pytest.raises(DataError, match="do not match the SID tokens of the saved model"):
        scorer_for(dataset, split, changed, result.run_dir)


def test_an_interrupted_tiger_run_resumes_to_the_same_metrics(tmp_path):
    dataset, sid_file = walk_dataset(tmp_path, users=60)
    tiny = {**TINY, "dropout": 0.2}  # dropout draws from the random state the checkpoint restores
    config = load_config(
        None,
        [
            f"data.path={dataset.path}",
            "model.name=tiger",
            f"model.sid_file={sid_file}",
            "model.max_len=5",
            "eval.ks=[1,5,10]",
            "train.epochs=3",
            "train.batch_size=16",
            "train.lr=0.01",
            *[f"model.{k}={v}" for k, v in tiny.items()],
        ],
    )
    whole = run(config, tmp_path / "whole", progress=False).metrics
    split = split_for(dataset, config)
    run_dir = RunDir.create(tmp_path / "parts", config)
    assert Trainer(build_model(dataset, config), split, config, run_dir, progress=False).fit(stop_after_epoch=1) is None
    resumed = run(config, tmp_path / "parts", progress=False, resume=True).metrics
    for which in ("valid", "test"):
        resumed[which].pop("seconds"), whole[which].pop("seconds")
        assert resumed[which] == whole[which]
    assert whole["test"]["ndcg@10"] > 0  # it trained at all (a random TIGER ranks the 24 items arbitrarily)


def test_tiger_bad_input(tmp_path, caplog):
    dataset, sid_file = walk_dataset(tmp_path, users=10)
    with pytest.raises(ConfigError, match="eval.ks goes up to 200 but model.num_beams is 50"):
        load_config(None, ["model.name=tiger", "eval.ks=[10,200]"])
    with pytest.raises(DataError, match="has no 'sid' item column; build SIDs with `genrec sid build`"):
        build_tiger(dataset, TIGERConfig(**TINY))  # a dataset without SIDs and no sid_file
    table = json.loads(sid_file.read_text())
    table["i3"] = ["<a_0>", "<b_1>"]
    sid_file.write_text(json.dumps(table))
    with pytest.raises(DataError, match="different numbers of levels"):
        build_tiger(dataset, TIGERConfig(**TINY, sid_file=str(sid_file)))
    table["i3"] = table["i4"]  # a duplicate SID: reported, and the two items tie in the ranking
    sid_file.write_text(json.dumps(table))
    with caplog.at_level(logging.WARNING, logger="genrec.models"):
        build_tiger(dataset, TIGERConfig(**TINY, sid_file=str(sid_file)))
    assert "1 items share a semantic ID" in caplog.text
