"""Semantic IDs: tokens and .index.json files, RQ-KMeans, RQ-VAE, collision handling, the prefix trie."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genrec.cli import main
from genrec.data import prepare_dataset
from genrec.errors import DataError
from genrec.items.rq import RQVAEConfig, kmeans, residual_kmeans, train_rqvae
from genrec.items.semantic_ids import (
    SemanticIds,
    add_disambiguation_level,
    code_token,
    parse_token,
    read_index_json,
    reassign_to_free_codes,
    write_index_json,
)
from genrec.items.trie import SIDTrie


def _blobs(n_per: int = 40, centers: int = 8, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(centers, dim, generator=g) * 10
    labels = torch.arange(centers).repeat_interleave(n_per)
    return means[labels] + torch.randn(len(labels), dim, generator=g) * 0.5, labels


# ---- tokens and files ---------------------------------------------------------------------------------
def test_tokens_round_trip_and_bad_tokens_are_named():
    assert code_token(0, 12) == "<a_12>" and code_token(3, 0) == "<d_0>"
    assert parse_token("<c_200>", level=2) == 200
    with pytest.raises(DataError, match="bad semantic-ID token '<a12>'"):
        parse_token("<a12>")
    with pytest.raises(DataError, match="token '<b_3>' is at position 1, where level 'a' was expected"):
        parse_token("<b_3>", level=0)


def test_the_published_letter_sids_load_with_their_collisions(data_dir, tmp_path):
    beauty = prepare_dataset("letter", tmp_path / "beauty", raw=data_dir / "amazon-beauty")
    sids = SemanticIds.from_dataset(beauty)
    assert sids.num_items == 12101 and sids.num_levels == 4 and sids.codebook_sizes == [256, 256, 256, 256]
    assert sids.collisions() == 13  # the published 4-level SIDs are not all unique
    keys = [str(k) for k in beauty.item_raw_ids()]
    again = read_index_json(data_dir / "amazon-beauty" / "Beauty.index.json", keys)
    assert np.array_equal(again.codes, sids.codes)
    write_index_json(sids, keys, tmp_path / "copy.index.json")
    assert json.loads((tmp_path / "copy.index.json").read_text()) == json.loads(
        (data_dir / "amazon-beauty" / "Beauty.index.json").read_text()
    )
    with pytest.raises(DataError, match="1 items have no semantic ID"):
        read_index_json(data_dir / "amazon-beauty" / "Beauty.index.json", [*keys, "no-such-item"])


# ---- quantisers ---------------------------------------------------------------------------------------
def test_kmeans_recovers_separated_clusters():
    x, labels = _blobs()
    _, assign = kmeans(x, 8, seed=1)
    # each true cluster maps to exactly one k-means cluster and vice versa
    pairs = {(int(a), int(b)) for a, b in zip(labels, assign)}
    assert len(pairs) == 8 and len({a for a, _ in pairs}) == len({b for _, b in pairs}) == 8


def test_residual_kmeans_levels_refine_the_reconstruction():
    x, _ = _blobs(n_per=30)
    errors = [residual_kmeans(x, [8] * levels, seed=0, use_faiss=False)[2].reconstruction_mse for levels in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]
    codes, distances, report = residual_kmeans(x, [8, 8, 8], seed=0, use_faiss=False)
    assert codes.shape == (240, 3) and distances.shape == (240, 8)
    assert report.usage[0] == 1.0 and 7.5 < report.perplexity[0] <= 8.0  # 8 balanced clusters at level 1
    np.testing.assert_array_equal(distances.argmin(1), codes[:, 2])


def test_rqvae_learns_to_reconstruct_and_uses_its_codebooks():
    x, _ = _blobs(n_per=50, dim=24)
    config = RQVAEConfig(hidden=[32], code_dim=8, codebook_sizes=[8, 8], epochs=60, batch_size=128, lr=3e-3)
    model, codes, distances, report = train_rqvae(x, config, progress=False)
    untrained_mse = float(((x - x.mean(0)) ** 2).mean())
    assert report.reconstruction_mse < 0.2 * untrained_mse
    assert codes.shape == (400, 2) and distances.shape == (400, 8)
    assert report.usage[0] >= 0.75 and report.perplexity[0] > 5
    # dead-code reset: a codebook with every code parked far away gets its codes back
    with torch.no_grad():
        model.codebooks[1].fill_(1e3)
    moved = model.reset_dead_codes(x, torch.Generator().manual_seed(0))
    assert moved >= 7


# ---- collisions ---------------------------------------------------------------------------------------
def test_collisions_are_resolved_both_ways():
    codes = np.array([[1, 2], [1, 2], [1, 2], [0, 5], [0, 5], [3, 3]])
    extra = add_disambiguation_level(codes)
    assert extra[:, 2].tolist() == [0, 1, 2, 0, 1, 0] and len(np.unique(extra, axis=0)) == 6
    distances = np.array(
        [
            [0.0, 1, 2, 3, 4, 5],
            [0, 1, 0.1, 3, 4, 5],
            [9, 9, 0.5, 9, 0.2, 9],
            [0, 1, 2, 3, 4, 5],
            [5, 4, 3, 2, 1, 0],
            [0, 1, 2, 3, 4, 5],
        ],
        dtype=float,
    )
    moved, stuck = reassign_to_free_codes(codes, distances)
    assert stuck == 0 and len(np.unique(moved, axis=0)) == 6
    assert (moved[:, 0] == codes[:, 0]).all()  # only the last level changes
    assert moved[1].tolist() == [1, 2] and moved[2].tolist() == [1, 4]  # item 1 is nearest to code 2, keeps it
    assert moved[0].tolist() == [1, 0]
    assert moved[4].tolist() == [0, 5] and moved[3].tolist() == [0, 0]  # item 4 sits on code 5; item 3 moves


# ---- the trie -----------------------------------------------------------------------------------------
def test_the_trie_allows_only_real_sids_and_maps_them_back():
    trie = SIDTrie([[10, 20, 30], [10, 20, 31], [11, 22, 30], [10, 20, 30]], items=[1, 2, 3, 4])
    assert len(trie) == 3 and trie.depth == 3
    assert trie.allowed([]) == [10, 11] and trie.allowed([10]) == [20] and trie.allowed([10, 20]) == [30, 31]
    assert trie.allowed([12]) == [] and trie.items([10, 20, 30]) == [1, 4] and trie.items([10, 22, 30]) == []
    step = trie.prefix_allowed_tokens_fn(prompt_length=2, end_token=0)
    assert step(0, torch.tensor([5, 6])) == [10, 11] and step(0, torch.tensor([5, 6, 11, 22, 30])) == [0]


def test_constrained_beam_search_of_a_random_model_yields_only_real_sids(tiny_llama):
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama)
    model.generation_config.do_sample = True  # a sampling default must not leak into the search
    model.generation_config.temperature = 5.0
    rng = np.random.default_rng(0)
    sids = rng.integers(10, 60, size=(30, 3)).tolist()
    trie = SIDTrie(sids, items=list(range(1, 31)))
    prompt = torch.tensor([[3, 4, 5, 6]])
    out = model.generate(
        prompt,
        num_beams=8,
        num_return_sequences=8,
        do_sample=False,
        max_new_tokens=4,
        prefix_allowed_tokens_fn=trie.prefix_allowed_tokens_fn(4, end_token=1),
        eos_token_id=1,
        pad_token_id=1,
    )
    beams = [seq[4:7] for seq in out.tolist()]
    assert all(trie.items(b) for b in beams) and len({tuple(b) for b in beams}) == 8


# ---- the CLI ------------------------------------------------------------------------------------------
def test_sid_build_writes_unique_sids(data_dir, tmp_path, tiny_bert, capsys):
    office = prepare_dataset("minionerec", tmp_path / "office", raw=data_dir / "minionerec", name="Office_Products")
    out = tmp_path / "office.index.json"
    argv = [
        "sid",
        "build",
        "--data",
        str(office.path),
        "--embedder",
        str(tiny_bert),
        "--levels",
        "16,16,16",
        "--out",
        str(out),
        "--json",
    ]
    assert main([*argv, "--collisions", "extra-level"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_items"] == 3459 and report["collisions_before"] > 0 and report["collisions_after"] == 0
    sids = read_index_json(out, [str(k) for k in office.item_raw_ids()])
    assert sids.collisions() == 0 and sids.num_levels == 4  # TIGER's extra level
    assert main(argv) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    # a random tiny encoder crowds items under few prefixes: 16 last-level codes cannot hold them all,
    # and the report says so instead of pretending the SIDs are unique
    assert main([*argv, "--method", "rqvae", "--epochs", "3", "--overwrite"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["collisions_after"] == read_index_json(out, [str(k) for k in office.item_raw_ids()]).collisions()
    assert 0 < report["collisions_after"] < report["collisions_before"] and len(report["levels"]) == 3
