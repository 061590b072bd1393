"""Side features in the ID models: the feature item encoder, feature-only items, and cold-start ranking."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genrec.cli import main
from genrec.config import load_config
from genrec.errors import ConfigError
from genrec.models.item_features import FeatureItemEncoder
from genrec.runner import build_model, dataset_for, split_for

from conftest import TINY_SASREC


def _config(data_dir, *extra):
    return load_config(None, [f"data.raw={data_dir / 'ml-100k'}", *TINY_SASREC, *extra])


def test_the_encoder_combines_id_and_typed_feature_vectors(data_dir):
    config = _config(data_dir, "model.item_features=[genres, year]")
    dataset = dataset_for(config.data)
    model = build_model(dataset, config)
    encoder = model.item_encoder
    assert isinstance(encoder, FeatureItemEncoder) and encoder.names == ["genres", "year"]
    ids = torch.tensor([[5, 9, 0], [7, 0, 0]])
    vectors = encoder(ids)  # [2, 3, D]
    assert vectors.shape == (2, 3, 16) and torch.all(vectors[0, 2] == 0) and torch.all(vectors[1, 1:] == 0)
    # sum: id vector + mean of the genre vectors + the year's linear map, recomputed by hand for item 5
    genres = encoder._genres_values[5]
    genre_mean = encoder.tables["genres"](genres[genres != 0]).mean(0)
    year = encoder.tables["year"](encoder._year_values[5])
    torch.testing.assert_close(vectors[0, 0], encoder.id_table.weight[5] + genre_mean + year)
    # the scored vectors are the same encoder's (SASRec ranks with its item encoder)
    scored = model.item_vectors(torch.tensor([5]))[0]
    torch.testing.assert_close(
        scored, torch.nn.functional.normalize(vectors[0, 0], dim=-1) if model.normalised else vectors[0, 0]
    )
    # features are data, rebuilt from the dataset: checkpoints hold the weights only
    assert not any("_values" in key for key in model.state_dict())
    assert "item_encoder.tables.genres.weight" in model.state_dict()


def test_every_feature_vector_starts_at_the_scale_of_an_id_vector(data_dir):
    # a continuous feature's map is rank one: started large, it makes every item of a year alike
    # (with Xavier the year's vector had 15x an id vector's norm and cost ML-1M 29% NDCG@10)
    config = load_config("ml-1m/hstu-features.yaml", [f"data.raw={data_dir / 'ml-1m-sample'}"])
    encoder = build_model(dataset_for(config.data), config).item_encoder
    items = torch.arange(1, encoder.num_items + 1)
    id_norm = encoder.id_table(items).norm(dim=-1).mean()
    for name in encoder.names:
        norm = encoder.feature_vectors(name, items).norm(dim=-1).mean()
        assert 0.3 < norm / id_norm < 3, (name, float(norm), float(id_norm))


def test_feature_only_items_get_vectors_from_what_they_are(data_dir):
    config = _config(data_dir, "model.item_features=[genres]", "model.item_id=false")
    dataset = dataset_for(config.data)
    encoder = build_model(dataset, config).item_encoder
    assert encoder.id_table is None
    genres = dataset.items["genres"].to_pylist()  # row i = item i + 1
    same = [i + 1 for i, g in enumerate(genres) if g == genres[0]]
    other = next(i + 1 for i, g in enumerate(genres) if g != genres[0])
    vectors = encoder(torch.tensor([same[0], same[1], other]))
    torch.testing.assert_close(vectors[0], vectors[1])  # same genres, same vector: no id to tell them apart
    assert not torch.allclose(vectors[0], vectors[2])


def test_rare_items_lose_their_id_vector(data_dir):
    config = _config(data_dir, "model.item_features=[genres]", "model.id_min_count=5")
    dataset = dataset_for(config.data)
    train = split_for(dataset, config).train
    encoder = build_model(dataset, config).item_encoder
    counts = np.bincount(train.items, minlength=dataset.num_items + 1)
    rare, common = int(np.flatnonzero((counts < 5) & (counts > 0))[0]), int(np.argmax(counts))
    only_features = encoder.feature_vectors("genres", torch.tensor([rare, common]))
    full = encoder(torch.tensor([rare, common]))
    torch.testing.assert_close(full[0], only_features[0])  # no id vector below 5 training events
    assert not torch.allclose(full[1], only_features[1])


def test_feature_config_errors(data_dir):
    with pytest.raises(ConfigError, match="item_id=false makes items their features only"):
        _config(data_dir, "model.item_id=false")
    with pytest.raises(ConfigError, match="names 'genres' twice"):
        _config(data_dir, "model.item_features=[genres, genres]")
    with pytest.raises(ConfigError, match="id_min_count drops the id vector"):
        _config(data_dir, "model.id_min_count=3")
    config = _config(data_dir, "model.item_features=[brand]")
    with pytest.raises(ConfigError, match="brand.*genres"):  # the error lists the features the dataset has
        build_model(dataset_for(config.data), config)
    with pytest.raises(ConfigError, match="HLLM's items have no id vector"):
        load_config(None, ["model.name=hllm", "model.user.item_features=[genres]", "model.user.id_min_count=2"])


def test_a_feature_model_trains_evaluates_and_ranks_items_never_seen_in_training(data_dir, tmp_path, capsys):
    """Time split keeping only targets whose item has no training event: an ID model cannot place them
    (their ids were never trained), a feature-only model can, through their genres and year."""
    # lr 0.005: three epochs of a tiny model must learn what a year means (its map starts small)
    common = ["train.epochs=3", "train.lr=0.005", "split.protocol=new-items", "eval.ks=[10, 50]", "train.metric=hr@50"]
    results = {}
    for name, extra in (("ids", []), ("features", ["model.item_features=[genres, year]", "model.item_id=false"])):
        out = tmp_path / name
        assert (
            main(
                [
                    "train",
                    "--set",
                    f"data.raw={data_dir / 'ml-100k'}",
                    *[a for s in TINY_SASREC + common + extra for a in ("--set", s)],
                    "--out",
                    str(out),
                    "--json",
                    "-q",
                ]
            )
            == 0
        )
        results[name] = json.loads(capsys.readouterr().out)["test"]
    assert results["ids"]["num_users"] == results["features"]["num_users"] > 20
    assert results["features"]["hr@50"] > results["ids"]["hr@50"]
    # `genrec eval` rebuilds the encoder from the dataset (same vocabularies: fitted on training events)
    assert main(["eval", str(tmp_path / "features"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hr@50"] == results["features"]["hr@50"]


def test_a_dataset_prepared_before_features_says_to_prepare_it_again(ml100k, tmp_path):
    import shutil

    from genrec.data.dataset import MANIFEST, Dataset

    old = tmp_path / "old"
    shutil.copytree(ml100k.path, old)
    manifest = json.loads((old / MANIFEST).read_text())
    manifest["format_version"] = 1
    manifest.pop("features", None)
    (old / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="no item feature 'genres'.*prepared by a genrec without features"):
        Dataset.load(old).feature("item", "genres")


def test_sparse_and_embedding_features_missing_and_out_of_vocabulary_values():
    from genrec.data.feature_tables import EmbeddingFeature, SparseFeature
    from genrec.data.features import FeatureSpec

    # 4 items: brand ids 0 = missing (item 1), 1 = out of vocabulary (item 2), 2 and 3 = known brands
    brand = SparseFeature(FeatureSpec("brand", "sparse", vocab_size=2), np.array([0, 0, 1, 2, 3]), ["a", "b"])
    vectors = np.arange(15, dtype=np.float32).reshape(5, 3)
    present = np.array([False, True, True, False, True])  # item 3 has no vector
    image = EmbeddingFeature(FeatureSpec("image", "embedding", dim=3), vectors, present)
    encoder = FeatureItemEncoder(4, 8, {"brand": brand, "image": image}, item_id=False)
    brand_vectors = encoder.feature_vectors("brand", torch.tensor([1, 2, 3]))
    assert torch.all(brand_vectors[0] == 0) and torch.all(brand_vectors[1] != 0)  # missing: zero; OOV: learned
    image_vectors = encoder.feature_vectors("image", torch.tensor([2, 3]))
    assert torch.all(image_vectors[1] == 0)  # no vector: nothing added
    torch.testing.assert_close(image_vectors[0], encoder.tables["image"](torch.from_numpy(vectors[2])))
    # the brand's OOV row is one learned vector shared by every unknown brand, and it trains
    out = encoder(torch.tensor([2, 4]))
    out.sum().backward()
    assert (
        encoder.tables["brand"].weight.grad[1].abs().sum() > 0
        and encoder.tables["brand"].weight.grad[0].abs().sum() == 0
    )
    with pytest.raises(ValueError, match="rows for 4 items, not 5"):
        FeatureItemEncoder(5, 8, {"brand": brand})


def test_id_dropout_drops_whole_id_vectors_in_training_only():
    from genrec.data.feature_tables import SparseFeature
    from genrec.data.features import FeatureSpec

    brand = SparseFeature(FeatureSpec("brand", "sparse", vocab_size=2), np.array([0, 2, 3, 2, 3]), ["a", "b"])
    encoder = FeatureItemEncoder(4, 8, {"brand": brand}, id_dropout=0.5)
    ids = torch.tensor([1, 2, 3, 4] * 50)
    with_id = encoder.eval()(ids)
    features_only = encoder.feature_vectors("brand", ids)
    dropped = encoder.train()(ids)
    kept = torch.isclose(dropped, with_id).all(-1)
    lost = torch.isclose(dropped, features_only).all(-1)
    assert torch.all(kept ^ lost)  # every occurrence is either whole or its id vector is gone entirely
    assert 50 < int(lost.sum()) < 150  # about half of the 200
    assert torch.equal(encoder.eval()(ids), with_id)  # evaluation and serving never drop
    with pytest.raises(ConfigError, match="id_dropout must be in"):
        load_config(None, ["model.name=sasrec", "model.id_dropout=0.3"])  # no features to fall back on
