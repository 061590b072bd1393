"""Where raw releases come from: `--raw PATH`, `$GENREC_DATA_DIR/<folder>`, the cache, or a download.

The lookup order is the same for every source:
1. `--raw PATH` (the folder of the release as distributed, e.g. the unzipped `ml-1m/`);
2. `$GENREC_DATA_DIR/<folder>` when it holds the release's files;
3. `<cache>/raw/<folder>` from an earlier download (`$GENREC_CACHE_DIR`, default `~/.cache/genrec`);
4. a download of the official archive, checked against its published sha256, into the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from genrec.errors import DataError


@dataclass(frozen=True)
class Release:
    """An official raw release of a dataset.

    `required` are the files that must be present in the release folder; `sha256` is the checksum
    of the archive at `url` (None for releases that change over time, such as ml-latest).
    """

    name: str
    folder: str
    required: tuple[str, ...]
    url: str | None = None
    sha256: str | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("GENREC_CACHE_DIR", Path.home() / ".cache" / "genrec"))


def _missing(folder: Path, required: tuple[str, ...]) -> list[str]:
    return [name for name in required if not (folder / name).is_file()]


def locate_release(release: Release, raw: str | Path | None = None, download: bool = True) -> Path:
    """The folder holding `release`'s raw files, found in the order given in the module docstring."""
    if raw is not None:
        folder = Path(raw).expanduser()
        if folder.is_file():
            raise DataError(
                f"--raw {folder} is a file; this source reads the {release.name} release folder that "
                f"holds {', '.join(release.required)}: pass that folder"
            )
        if not folder.is_dir():
            raise DataError(f"--raw {folder}: no such directory (expected the {release.name} release folder)")
        missing = _missing(folder, release.required)
        if missing:
            raise DataError(
                f"--raw {folder}: missing {', '.join(missing)} (expected the {release.name} release folder)"
            )
        return folder
    tried = []
    env = os.environ.get("GENREC_DATA_DIR")
    if env:
        folder = Path(env).expanduser() / release.folder
        if not _missing(folder, release.required):
            return folder
        tried.append(f"$GENREC_DATA_DIR/{release.folder} ({folder})")
    cached = cache_dir() / "raw" / release.folder
    if not _missing(cached, release.required):
        return cached
    if download and release.url:
        try:
            return download_release(release, cache_dir() / "raw")
        except DataError as exc:
            tried.append(str(exc))
    where = "; ".join(tried) if tried else "GENREC_DATA_DIR is not set"
    raise DataError(
        f"no local copy of {release.name} ({where}). Either pass --raw PATH pointing at the unzipped release "
        f"folder holding {', '.join(release.required)}, or set GENREC_DATA_DIR so that "
        f"$GENREC_DATA_DIR/{release.folder}/{release.required[0]} exists"
        + (f", or let genrec download {release.url}" if release.url else "")
    )


def download_release(release: Release, dest: Path, url: str | None = None) -> Path:
    """Download the release archive, verify its sha256, unzip it, and return `dest/<folder>`.

    Every step writes to a temp location first, so an interrupted download leaves nothing behind.
    """
    url = url or release.url
    if url is None:
        raise DataError(f"{release.name} has no download URL")
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp_zip = tempfile.mkstemp(dir=dest, prefix=f".{release.folder}.", suffix=".zip")
    tmp_dir = Path(tempfile.mkdtemp(dir=dest, prefix=f".{release.folder}.unzip-"))
    try:
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {release.name}") as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError) as exc:
            raise DataError(f"download of {url} failed: {exc}") from exc
        actual = digest.hexdigest()
        if release.sha256 is not None and actual != release.sha256:
            raise DataError(f"download of {url} has sha256 {actual}, expected {release.sha256}; refusing to use it")
        try:
            with zipfile.ZipFile(tmp_zip) as archive:
                archive.extractall(tmp_dir)
        except zipfile.BadZipFile as exc:
            raise DataError(f"download of {url} is not a valid zip archive: {exc}") from exc
        inner = tmp_dir / release.folder
        if _missing(inner, release.required):
            raise DataError(f"archive {url} does not contain {release.folder}/{release.required[0]}")
        final = dest / release.folder
        if final.exists():
            shutil.rmtree(final)
        os.replace(inner, final)
        return final
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_zip)
        shutil.rmtree(tmp_dir, ignore_errors=True)
