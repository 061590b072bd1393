"""One module per raw format; `get_source(name, **options)` finds one by its CLI name."""

from __future__ import annotations

from typing import Any

from genrec.data.sources.base import RawTables, Source
from genrec.data.sources.movielens import (
    MovieLens1M,
    MovieLens100K,
    MovieLensCSV,
    MovieLensLatest,
    MovieLensLatestSmall,
)
from genrec.data.sources.tabular import ParquetSource, TabularOptions, TabularSource
from genrec.errors import ConfigError, unknown_name

SOURCES: dict[str, type[Source]] = {
    cls.name: cls
    for cls in (MovieLens100K, MovieLens1M, MovieLensCSV, MovieLensLatestSmall, MovieLensLatest, TabularSource, ParquetSource)
}


def get_source(name: str, **options: Any) -> Source:
    """The source called `name`, configured with `options` (only the generic sources take any)."""
    if name not in SOURCES:
        raise unknown_name("source", name, list(SOURCES))
    cls = SOURCES[name]
    options = {k: v for k, v in options.items() if v is not None}
    if issubclass(cls, TabularSource):
        valid = list(TabularOptions.__dataclass_fields__)
        unknown = [k for k in options if k not in valid]
        if unknown:
            raise ConfigError(f"unknown option {unknown[0]!r} for source {name!r}; valid options: {', '.join(valid)}")
        return cls(**options)
    if options:
        raise ConfigError(f"source {name!r} takes no options (got {', '.join(sorted(options))})")
    return cls()


__all__ = ["SOURCES", "RawTables", "Source", "get_source"]
