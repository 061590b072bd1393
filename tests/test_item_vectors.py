"""Embedding features (`genrec data features`), the features in `genrec data info`, and the
new-item evaluation from the command line."""

import json
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genrec.cli import main
from genrec.data import Dataset, leave_one_out
from genrec.data.feature_tables import fit_features

from conftest import write_lines


@pytest.fixture
def ml100k_copy(ml100k, tmp_path):
    """A copy of the session's ML-100K that a test may change."""
    return Dataset.load(shutil.copytree(ml100k.path, tmp_path / "ml-100k"))


def features_of(capsys, *args):
    assert main(["data", "features", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_vectors_from_npy_and_parquet(ml100k_copy, tmp_path, capsys):
    ds = ml100k_copy
    vectors = np.random.default_rng(0).normal(size=(ds.num_items, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", vectors)
    features = features_of(capsys, ds.path, "--from-embeddings", tmp_path / "v.npy", "--name", "image")
    assert features["item"][-1] == {"name": "image", "type": "embedding", "coverage": 1.0, "dim": 8}
    assert [f["name"] for f in features["item"]] == ["genres", "year", "image"]
    # keyed by raw id, for some items only: the others are missing
    raw = ds.item_raw_ids()
    keyed = pa.table({"item": [raw[5], raw[2]], "vector": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]})
    pq.write_table(keyed, tmp_path / "v.parquet")
    features_of(capsys, ds.path, "--from-embeddings", tmp_path / "v.parquet", "--name", "text")
    tables = fit_features(Dataset.load(ds.path), leave_one_out(ds.sequences).train, item=["image", "text"], user=[])
    image, text = tables.item["image"], tables.item["text"]
    assert image.vectors.shape == (ds.num_items + 1, 8) and image.vectors.dtype == np.float32
    np.testing.assert_array_equal(image.vectors[1:], vectors)
    assert not image.vectors[0].any() and not image.present[0] and image.present[1:].all()
    assert text.present.nonzero()[0].tolist() == [2, 5] and text.vectors[5].tolist() == [1.0, 2.0, 3.0]
    assert Dataset.load(ds.path).item_vectors.column_names == ["item", "image", "text"]
    # a second attach under the same name needs --overwrite; the [N+1, D] layout (row 0 padding) is read too
    padded = np.vstack([np.zeros((1, 4)), np.ones((ds.num_items, 4))])
    np.save(tmp_path / "p.npy", padded)
    assert (
        main(["data", "features", str(ds.path), "--from-embeddings", str(tmp_path / "p.npy"), "--name", "image"]) == 2
    )
    assert "already has an item feature 'image' (embedding); pass --overwrite" in capsys.readouterr().err
    features = features_of(capsys, ds.path, "--from-embeddings", tmp_path / "p.npy", "--name", "image", "--overwrite")
    assert [f["dim"] for f in features["item"] if f["name"] == "image"] == [4]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda n, p: np.save(p / "v.npy", np.ones((n - 1, 4))), r"has 1,681 rows but the dataset has 1,682 items"),
        (lambda n, p: np.save(p / "v.npy", np.ones(n)), r"expected a 2-d float array \[items, dim\]"),
        (
            lambda n, p: np.save(p / "v.npy", np.where(np.arange(n)[:, None] == 9, np.nan, np.ones((n, 3)))),
            r"the vector of item 10 \(index 10\) holds NaN or infinite values",
        ),
        (
            lambda n, p: pq.write_table(pa.table({"item": [1, 99999], "vector": [[1.0], [2.0]]}), p / "v.parquet"),
            r"1 vectors are for items the dataset does not have \(first: 99999\)",
        ),
        (
            lambda n, p: pq.write_table(pa.table({"item": [1, 2], "vector": [[1.0, 2.0], [2.0]]}), p / "v.parquet"),
            r"v\.parquet, row 2: a vector of width 1; the first has width 2",
        ),
        (
            lambda n, p: pq.write_table(pa.table({"item": [3, 3], "vector": [[1.0], [2.0]]}), p / "v.parquet"),
            r"item 3 has more than one vector",
        ),
        (lambda n, p: (p / "v.txt").write_text("1 2 3"), r"expected a \.npy, \.npz or \.parquet file"),
    ],
)
def test_bad_vectors(ml100k_copy, tmp_path, capsys, make, message):
    make(ml100k_copy.num_items, tmp_path)
    path = next(tmp_path.glob("v.*"))
    before = (ml100k_copy.path / "manifest.json").read_bytes()
    assert main(["data", "features", str(ml100k_copy.path), "--from-embeddings", str(path)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert (ml100k_copy.path / "manifest.json").read_bytes() == before
    assert not (ml100k_copy.path / "item_vectors.parquet").exists()


def test_a_name_taken_by_another_feature_type(ml100k_copy, tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.ones((ml100k_copy.num_items, 2)))
    args = ["data", "features", str(ml100k_copy.path), "--from-embeddings", str(tmp_path / "v.npy")]
    assert main([*args, "--name", "genres", "--overwrite"]) == 2
    assert "already has an item feature 'genres' (array); choose another --name" in capsys.readouterr().err


def test_embed_text_with_a_local_model(ml100k_copy, tiny_bert, capsys):
    features = features_of(capsys, ml100k_copy.path, "--embed-text", tiny_bert, "--max-tokens", "16", "-q")
    assert features["item"][-1] == {"name": "text_embedding", "type": "embedding", "coverage": 1.0, "dim": 24}
    vectors = fit_features(Dataset.load(ml100k_copy.path), None, item=["text_embedding"], user=[])
    assert np.isfinite(vectors.item["text_embedding"].vectors).all()


def test_info_lists_the_features(ml100k, capsys):
    assert main(["data", "info", str(ml100k.path)]) == 0
    out = capsys.readouterr().out
    assert "item_features: genres: array (19 values, 100.0% covered)" in out
    assert "year: continuous (standard, 99.9% covered)" in out
    assert "gender: sparse (2 values, 100.0% covered)" in out
    assert main(["data", "features", str(ml100k.path)]) == 0
    assert "user features:\n  age: sparse (61 values, 100.0% covered)" in capsys.readouterr().out


def test_prepare_with_feature_flags_and_eval_new_items(tmp_path, capsys):
    lines = ["user_id,item_id,timestamp"]
    for u in range(30):  # items 0-4 before t=100; item 5 and 6 appear later only
        lines += [f"u{u},i{u % 5},{u}", f"u{u},i{(u + 1) % 5},{50 + u}", f"u{u},i{5 + u % 2},{200 + u}"]
    write_lines(tmp_path / "e.csv", lines)
    write_lines(tmp_path / "items.csv", ["item_id,kind,tags", *[f"i{i},k{i % 2},a|b{i}" for i in range(7)]])
    prepare = ["data", "prepare", "csv", "--raw", str(tmp_path / "e.csv"), "--items", str(tmp_path / "items.csv")]
    code = main(
        [
            *prepare,
            "--item-feature",
            "kind:sparse",
            "--item-feature",
            "tags:array",
            "--out",
            str(tmp_path / "ds"),
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["item_features"] == {
        "kind": "sparse (2 values, 100.0% covered)",
        "tags": "array (8 values, 100.0% covered)",
    }
    assert (
        main([*prepare, "--item-feature", "kind:sparse", "--item-feature", "kind:array", "--out", str(tmp_path / "x")])
        == 2
    )
    assert "feature 'kind' is declared twice" in capsys.readouterr().err
    base = ["eval", "--data", str(tmp_path / "ds"), "--json", "--protocol", "time", "--set", "split.time_targets=all"]
    base += ["--set", "split.valid_time=100", "--set", "split.test_time=200", "--ks", "10"]
    assert main(base) == 0
    every = json.loads(capsys.readouterr().out)
    assert main([*base, "--new-items"]) == 0
    new = json.loads(capsys.readouterr().out)
    assert new["new_items"] is True and new["cold_max_train_count"] == 0
    assert every["num_users"] == new["num_users"] == 30  # every test target (i5, i6) is new here
    assert main([*base[:4], "--protocol", "new-items", *base[6:]]) == 0
    protocol = json.loads(capsys.readouterr().out)
    assert protocol["protocol"] == "new-items" and protocol["num_users"] == 30
    assert protocol["hr@10"] == pytest.approx(new["hr@10"])
    assert main([*base, "--new-items", "--cold", "3"]) == 2
    assert "either --cold N or --new-items" in capsys.readouterr().err
