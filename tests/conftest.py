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


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding=encoding)
    return path
