import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real datasets (`../shared/data` beside the repo, or $GENREC_DATA_DIR)."""
    path = Path(os.environ.get("GENREC_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (path / "ml-100k" / "u.data").is_file():
        pytest.fail(f"shared datasets not found at {path}; set GENREC_DATA_DIR to the folder holding ml-100k/")
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own genrec cache, so nothing is read from or written to ~/.cache."""
    monkeypatch.setenv("GENREC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def ml100k(data_dir, tmp_path_factory):
    from genrec.data import prepare_dataset

    return prepare_dataset("ml-100k", tmp_path_factory.mktemp("ds") / "ml-100k", raw=data_dir / "ml-100k")


# a SASRec that trains in seconds on ML-100K (tests add train.epochs)
TINY_SASREC = [
    "model.name=sasrec",
    "model.max_len=20",
    "model.dim=16",
    "model.num_heads=2",
    "model.num_blocks=1",
    "train.batch_size=256",
    "train.loss.num_negatives=16",
    "train.device=cpu",
    "eval.ks=[10]",
    "train.patience=null",
]


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding=encoding)
    return path


# ---- tiny random-weight language models, written to disk as local checkpoints -----------------------
@pytest.fixture(scope="session")
def item_texts(ml100k):
    from genrec.items.text import TextTemplate, render_item_texts

    return render_item_texts(ml100k, TextTemplate())


def _write_tiny_model(folder, texts: list[str], pad: bool, model_class: str, config_class: str, **sizes):
    """`genrec.testing.write_tiny_model`, skipping the test where transformers is not installed."""
    pytest.importorskip("transformers")
    from genrec.testing import write_tiny_model

    return write_tiny_model(folder, texts, pad, model_class, config_class, **sizes)


def _write_tiny_llama(folder, texts: list[str], max_positions: int = 512, **extra):
    """`genrec.testing.write_tiny_llama`, skipping the test where transformers is not installed."""
    pytest.importorskip("transformers")
    from genrec.testing import write_tiny_llama

    return write_tiny_llama(folder, texts, max_positions, **extra)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, item_texts):
    """A 2-layer random Llama (no pad token, like real Llama tokenizers) saved as a local checkpoint."""
    return _write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), item_texts.texts[1:], max_positions=48)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, item_texts):
    """A 2-layer random BERT encoder (with a pad token) saved as a local checkpoint."""
    return _write_tiny_model(
        tmp_path_factory.mktemp("tiny-bert"),
        item_texts.texts[1:],
        True,
        "BertModel",
        "BertConfig",
        hidden_size=24,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
    )


# ---- a tiny dataset with semantic IDs ---------------------------------------------------------------
def walk_dataset(tmp_path, num_items: int = 24, users: int = 150, length: int = 8):
    """Users walk the catalogue in order (item i is followed by i + 1): the next item is predictable."""
    import itertools
    import json

    import numpy as np

    from genrec.data import prepare_dataset

    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for user in range(users):
        start = int(rng.integers(num_items))
        lines += [f"u{user},i{(start + t) % num_items},{t}" for t in range(length)]
    write_lines(tmp_path / "events.csv", lines)
    codes = list(itertools.product(range(3), range(3), range(3)))
    sid_file = tmp_path / "walk.index.json"
    sid_file.write_text(
        json.dumps({f"i{i}": [f"<a_{a}>", f"<b_{b}>", f"<c_{c}>"] for i, (a, b, c) in zip(range(num_items), codes)})
    )
    write_lines(tmp_path / "items.csv", ["item_id,title", *[f"i{i},walk stop {i}" for i in range(num_items)]])
    dataset = prepare_dataset(
        "csv", tmp_path / "walk", raw=tmp_path / "events.csv", items=str(tmp_path / "items.csv"), text_cols=["title"]
    )
    return dataset, sid_file
