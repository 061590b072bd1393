"""Locating raw releases: --raw, $GENREC_DATA_DIR, the cache, and a checksummed download."""

import hashlib
import zipfile

import pytest

from genrec.data.raw import Release, cache_dir, download_release, locate_release
from genrec.errors import DataError


def make_release(tmp_path):
    archive = tmp_path / "toy.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("toy/u.data", "1\t1\t5\t100\n")
        z.writestr("toy/u.item", "1|Toy (1995)\n")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    return archive, Release("toy", "toy", ("u.data", "u.item"), archive.as_uri(), sha)


def test_download_verifies_checksum_and_unzips(tmp_path):
    archive, release = make_release(tmp_path)
    folder = download_release(release, tmp_path / "cache")
    assert (folder / "u.data").read_text() == "1\t1\t5\t100\n"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["toy"]  # no temp files left
    bad = Release("toy", "toy", release.required, release.url, "0" * 64)
    with pytest.raises(DataError, match="sha256 .* expected 0000"):
        download_release(bad, tmp_path / "cache2")
    assert list((tmp_path / "cache2").iterdir()) == []
    with pytest.raises(DataError, match="download of .* failed"):
        download_release(Release("toy", "toy", ("u.data",), (tmp_path / "absent.zip").as_uri()), tmp_path / "c3")


def test_lookup_order(tmp_path, monkeypatch):
    archive, release = make_release(tmp_path)
    monkeypatch.delenv("GENREC_DATA_DIR", raising=False)
    # nothing local: downloaded into the cache, then found there
    found = locate_release(release)
    assert found == cache_dir() / "raw" / "toy"
    archive.unlink()
    assert locate_release(release) == found
    # $GENREC_DATA_DIR/<folder> wins over the cache, --raw over both
    env = tmp_path / "env"
    (env / "toy").mkdir(parents=True)
    for name in release.required:
        (env / "toy" / name).write_text("x")
    monkeypatch.setenv("GENREC_DATA_DIR", str(env))
    assert locate_release(release) == env / "toy"
    assert locate_release(release, raw=found) == found
