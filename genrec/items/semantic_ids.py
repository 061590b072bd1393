"""Semantic IDs: each item as a short tuple of discrete codes, one per level (TIGER, LETTER, MiniOneRec).

Codes are written as tokens `<a_12>` (level a, code 12), `<b_3>`, ...; a `.index.json` file maps an
item key to its tokens, `{"0": ["<a_12>", "<b_3>", "<c_200>"], ...}`, the format of the published
LETTER and MiniOneRec SIDs. `SemanticIds` holds the codes of a catalogue as one int array aligned
with genrec's item indices (row 0 = padding), and resolves collisions (items sharing a whole SID)
either by TIGER's extra disambiguation level or by moving items to the nearest free code of the
last level (LETTER / MiniOneRec).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genrec.errors import DataError

if TYPE_CHECKING:
    from genrec.data.dataset import Dataset

LEVEL_NAMES = "abcdefghijklmnopqrstuvwxyz"
_TOKEN = re.compile(r"^<([a-z])_(\d+)>$")


def code_token(level: int, code: int) -> str:
    """(level, code) -> "<a_12>"."""
    return f"<{LEVEL_NAMES[level]}_{code}>"


def parse_token(token: str, level: int | None = None, where: str = "") -> int:
    """ "<b_3>" -> 3, checking the letter is that of `level` when given."""
    match = _TOKEN.match(token)
    if match is None:
        raise DataError(f"{where}bad semantic-ID token {token!r}: expected the form <a_12>")
    if level is not None and match.group(1) != LEVEL_NAMES[level]:
        raise DataError(
            f"{where}token {token!r} is at position {level + 1}, where level {LEVEL_NAMES[level]!r} was expected"
        )
    return int(match.group(2))


@dataclass
class SemanticIds:
    """codes: [N+1, L] int64, the L codes of item i in row i (row 0, padding, is -1).
    codebook_sizes: [L] the number of codes at each level."""

    codes: np.ndarray
    codebook_sizes: list[int]

    def __post_init__(self) -> None:
        if self.codes.ndim != 2 or len(self.codebook_sizes) != self.codes.shape[1]:
            raise DataError(
                f"semantic IDs: codes of shape {self.codes.shape} do not match {len(self.codebook_sizes)} levels"
            )
        body = self.codes[1:]
        if len(body) and (body.min() < 0 or np.any(body >= np.asarray(self.codebook_sizes))):
            raise DataError("semantic IDs: a code is outside its level's codebook")

    @property
    def num_items(self) -> int:
        return len(self.codes) - 1

    @property
    def num_levels(self) -> int:
        return self.codes.shape[1]

    def tokens(self, item: int) -> list[str]:
        return [code_token(level, int(code)) for level, code in enumerate(self.codes[item])]

    def collisions(self) -> int:
        """Items whose whole SID is already taken by an earlier item (0 = every SID is unique)."""
        return count_collisions(self.codes[1:])

    def collision_rate(self) -> float:
        return self.collisions() / max(self.num_items, 1)

    @classmethod
    def from_tokens(
        cls, tokens: Sequence[Sequence[str] | None], codebook_sizes: list[int] | None = None, where: str = ""
    ) -> SemanticIds:
        """From token lists aligned with item indices 1..N (tokens[0] is the padding item, ignored).
        codebook_sizes: default the largest code seen at each level + 1, rounded up to a power of 2."""
        lengths = {len(t) for t in tokens[1:] if t is not None}
        missing = [i for i, t in enumerate(tokens) if i and t is None]
        if missing:
            raise DataError(f"{where}{len(missing)} items have no semantic ID (first: item index {missing[0]})")
        if len(lengths) != 1:
            raise DataError(f"{where}semantic IDs have different numbers of levels: {sorted(lengths)}")
        (levels,) = lengths
        codes = np.full((len(tokens), levels), -1, dtype=np.int64)
        for item in range(1, len(tokens)):
            codes[item] = [parse_token(tok, level, where) for level, tok in enumerate(tokens[item])]  # type: ignore[index]
        if codebook_sizes is None:
            top = codes[1:].max(axis=0) + 1 if len(codes) > 1 else np.ones(levels, dtype=np.int64)
            codebook_sizes = [int(2 ** np.ceil(np.log2(max(int(t), 2)))) for t in top]
        return cls(codes, codebook_sizes)

    @classmethod
    def from_dataset(cls, dataset: object, column: str = "sid") -> SemanticIds:
        """The SIDs a dataset ships in its items table (LETTER and MiniOneRec sources: column `sid`)."""
        items = dataset.items  # type: ignore[attr-defined]
        if column not in items.schema.names:
            raise DataError(
                f"the dataset at {dataset.path} has no {column!r} item column; build SIDs with "  # type: ignore[attr-defined]
                f"`genrec sid build`"
            )
        tokens: list[list[str] | None] = [None] * (dataset.num_items + 1)  # type: ignore[attr-defined]
        for item, sid in zip(items["item"].to_pylist(), items[column].to_pylist()):
            tokens[item] = sid
        return cls.from_tokens(tokens, where=f"{dataset.path}: ")  # type: ignore[attr-defined]


def read_index_json(path: str | Path, keys: Sequence[str]) -> SemanticIds:
    """SIDs from a `.index.json` file, for the items whose keys are `keys` (element i = item i's key,
    element 0 ignored): e.g. the raw ids of a LETTER or MiniOneRec dataset as strings."""
    path = Path(path)
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"semantic-ID file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected an object {{item: [tokens]}}")
    return SemanticIds.from_tokens([None, *(table.get(str(k)) for k in keys[1:])], where=f"{path}: ")


def semantic_ids_for(dataset: Dataset, sid_file: str | None) -> SemanticIds:
    """The SIDs a model config names (`model.sid_file`), else those the dataset ships."""
    if sid_file is None:
        return SemanticIds.from_dataset(dataset)
    return read_index_json(Path(sid_file).expanduser(), [str(k) for k in dataset.item_raw_ids()])


def write_index_json(sids: SemanticIds, keys: Sequence[str], path: str | Path) -> None:
    """Write `{key: [tokens]}` for items 1..N atomically (keys as in `read_index_json`)."""
    path = Path(path)
    table = {str(keys[item]): sids.tokens(item) for item in range(1, sids.num_items + 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(table))
    os.replace(tmp, path)


def count_collisions(codes: np.ndarray) -> int:
    """Rows of codes [n, L] that repeat an earlier row."""
    return len(codes) - len(np.unique(codes, axis=0))


def add_disambiguation_level(codes: np.ndarray) -> np.ndarray:
    """TIGER: [n, L] -> [n, L+1], the extra code numbering the items that share an SID (0, 1, ...)."""
    _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - np.repeat(starts, counts)
    return np.concatenate([codes, rank[:, None]], axis=1)


def reassign_to_free_codes(codes: np.ndarray, last_level_distances: np.ndarray) -> tuple[np.ndarray, int]:
    """LETTER / MiniOneRec: move colliding items to the nearest unused code of the last level.

    codes: [n, L]; last_level_distances: [n, K] each item's distance to every last-level code.
    Within a group sharing an SID the item nearest to the code keeps it; the others, nearest first,
    take the closest last-level code whose whole SID is still free. Returns (new codes, items that
    could not be placed because every code under their prefix was taken; they keep their SID).
    """
    codes = codes.copy()
    taken = {tuple(row) for row in codes.tolist()}
    _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    order = np.argsort(group.reshape(-1), kind="stable")  # items grouped by SID
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    stuck = 0
    for g in np.flatnonzero(counts > 1):
        members = order[starts[g] : starts[g] + counts[g]]
        current = codes[members[0], -1]
        members = members[np.argsort(last_level_distances[members, current], kind="stable")]
        for item in members[1:]:
            prefix = tuple(codes[item, :-1].tolist())
            for code in np.argsort(last_level_distances[item], kind="stable"):
                if (*prefix, int(code)) not in taken:
                    codes[item, -1] = code
                    taken.add((*prefix, int(code)))
                    break
            else:
                stuck += 1
    return codes, stuck
