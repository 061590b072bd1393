"""Exceptions that carry a message meant for the user.

The CLI prints a `GenrecError` as one line (no traceback) and exits with status 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class GenrecError(Exception):
    """Base class of every error caused by the user's input rather than by genrec itself."""


class DataError(GenrecError):
    """A raw file or a canonical dataset is missing, malformed or empty."""


class ConfigError(GenrecError):
    """A config key, value or name (source, model, protocol) is unknown or invalid."""


class CheckpointError(GenrecError):
    """A checkpoint file is missing, truncated, not genrec's, or does not fit the model."""


def unknown_name(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> ConfigError:
    """The error for a name that is not one of `valid`, listing the valid ones."""
    return ConfigError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(valid))}")
