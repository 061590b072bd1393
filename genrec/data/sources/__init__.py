"""One module per raw format; `get_source(name, **options)` finds one by its CLI name."""

from __future__ import annotations

import inspect
from typing import Any

from genrec.data.sources.amazon import Amazon2014, Amazon2018
from genrec.data.sources.base import RawTables, Source
from genrec.data.sources.hllm import HLLMSource
from genrec.data.sources.letter import LetterSource
from genrec.data.sources.minionerec import MiniOneRecSource
from genrec.data.sources.movielens import (
    MovieLens1M,
    MovieLens100K,
    MovieLensCSV,
    MovieLensLatest,
    MovieLensLatestSmall,
)
from genrec.data.sources.recbole import RecBoleSource
from genrec.data.sources.tabular import ParquetSource, TabularOptions, TabularSource
from genrec.errors import ConfigError, unknown_name

SOURCES: dict[str, type[Source]] = {
    cls.name: cls
    for cls in (
        MovieLens100K,
        MovieLens1M,
        MovieLensCSV,
        MovieLensLatestSmall,
        MovieLensLatest,
        TabularSource,
        ParquetSource,
        Amazon2014,
        Amazon2018,
        HLLMSource,
        MiniOneRecSource,
        LetterSource,
        RecBoleSource,
    )
}


def source_options(cls: type[Source]) -> list[str]:
    """The option names a source accepts (its constructor's keyword arguments)."""
    if cls.__init__ is object.__init__:
        return []
    names = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if issubclass(cls, TabularSource):
        names += list(TabularOptions.__dataclass_fields__)
    return names


def get_source(source_name: str, /, **options: Any) -> Source:
    """The source called `source_name`, configured with `options` (None values are ignored)."""
    if source_name not in SOURCES:
        raise unknown_name("source", source_name, list(SOURCES))
    cls = SOURCES[source_name]
    options = {k: v for k, v in options.items() if v is not None}
    valid = source_options(cls)
    unknown = [k for k in options if k not in valid]
    if unknown:
        allowed = f"valid options: {', '.join(valid)}" if valid else "it takes no options"
        raise ConfigError(f"unknown option {unknown[0]!r} for source {source_name!r}; {allowed}")
    return cls(**options)


__all__ = ["SOURCES", "RawTables", "Source", "get_source", "source_options"]
