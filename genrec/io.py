"""Small file helpers: checksums, atomic writes that respect the umask, exclusive locks, and the
rule that an output never overwrites an input, so an interrupted or mistaken run leaves nothing
half-written and deletes nothing it read."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from genrec.errors import ConfigError, DataError, GenrecError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, runs are not protected against a second writer
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("genrec")

LOCK_FILE = ".genrec.lock"  # inside a run directory while it is written; beside a dataset folder: .<name>.lock


class LockedError(GenrecError):
    """Another process holds the lock of a run directory or dataset folder."""


def sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """The hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def current_umask() -> int:
    """The process umask (read without changing it where /proc tells it)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(is_dir: bool) -> int:
    """The mode a plain `open` / `mkdir` would give: 0o666 / 0o777 less the umask (temp files get 0o600 / 0o700)."""
    return (0o777 if is_dir else 0o666) & ~current_umask()


@contextlib.contextmanager
def atomic_output_file(path: Path, overwrite: bool = True) -> Iterator[Path]:
    """A temp path in `path`'s folder to write; renamed to `path` when the block succeeds, removed if it fails.

    overwrite: False refuses an existing `path` (ConfigError naming --overwrite) before anything is written.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a file")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists (choose another --out or pass --overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_mode(is_dir=False))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder and a rename."""
    with atomic_output_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def is_nonempty_dir(path: Path) -> bool:
    """True for a folder holding anything but genrec's lock file."""
    return path.is_dir() and any(p.name != LOCK_FILE for p in path.iterdir())


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive advisory lock (`fcntl.flock`) on the file `lock_path` for the `with` block.

    A second process asking for the same lock is refused at once with a `LockedError` naming the
    holder's PID (or, with `wait`, waits for it). The lock goes when the block ends (the file is then removed) or when the process
    dies, even by kill -9 (the file then stays, unlocked, and the next holder reuses it).
    """
    if fcntl is None:
        yield
        return
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, default_mode(is_dir=False))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{what} is in use by another genrec process (pid {holder}); wait for it to end or stop it first"
            ) from None
        # the previous holder may have removed the file between our open and flock: lock the current one
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def check_output_not_input(out: str | Path, inputs: Mapping[str, str | Path | None], flag: str = "--out") -> None:
    """Refuse an output path that is, contains, or lies inside one of the `inputs` (name -> path).

    Writing (and with --overwrite, replacing) such an output would destroy or change what was read.
    Paths are compared after resolving symbolic links.
    """
    target = Path(out).expanduser().resolve()
    for name, path in inputs.items():
        if path is None:
            continue
        source = Path(path).expanduser().resolve()
        if target == source:
            relation = "is"
        elif _inside(source, target):
            relation = "contains"
        elif _inside(target, source):
            relation = "is inside"
        else:
            continue
        raise ConfigError(
            f"{flag} {out} {relation} the {name} {path}: genrec never writes over its inputs; choose another {flag}"
        )


def _remove_stale_temp_folders(out: Path) -> None:
    """Delete the temp folders an interrupted write of `out` left beside it (the caller holds `out`'s lock,
    so no live process is writing them)."""
    for stale in sorted(out.parent.glob(f".{out.name}.tmp-*")) + sorted(out.parent.glob(f".{out.name}.old-*")):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
            log.warning("removed %s, left by an interrupted write of %s", stale, out)


@contextlib.contextmanager
def atomic_output_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `out`; on success it replaces `out`, on any error it is deleted.

    An existing non-empty `out` is refused unless `overwrite`; the old content is removed only
    after the new one is complete, so a crash (or Ctrl-C) never leaves a partial folder at `out`.
    A lock beside `out` (the file `.<name>.lock`, there while it is written) keeps two processes from
    writing it at once; the temp folders of an earlier, interrupted write are removed.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"output path exists and is not a directory: {out}")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise DataError(f"cannot create {out}: {blocking} is a file, not a folder")
    if is_nonempty_dir(out) and not overwrite:
        raise DataError(f"output directory is not empty: {out} (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out.parent / f".{out.name}.lock", str(out)):
        _remove_stale_temp_folders(out)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        try:
            yield tmp
            _publish_modes(tmp)
            if out.exists():
                trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
                os.replace(out, trash / "old")
                os.replace(tmp, out)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _publish_modes(folder: Path) -> None:
    """Give a finished temp folder and its files the modes the umask asks for (mkdtemp makes them private)."""
    os.chmod(folder, default_mode(is_dir=True))
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(Path(root) / name, default_mode(is_dir=True))
        for name in files:
            os.chmod(Path(root) / name, default_mode(is_dir=False))
