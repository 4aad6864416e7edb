"""Error types. :class:`UserError` marks a user's mistake (bad config, bad data): the command line
prints its one-line message, without a traceback."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A user's mistake (a bad config value, bad input data); the message says what and where."""


class ConfigError(UserError, ValueError):
    """A bad configuration: the message names the key, the value and what was expected."""


class DataError(UserError, ValueError):
    """Bad input data: the message names the file and, where known, the row."""

    def __init__(self, message: str, path: str | Path | None = None, row: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(where + message)
        self.path = None if path is None else str(path)
        self.row = row


class RunError(RuntimeError):
    """A training run cannot continue (e.g. a non-finite loss)."""
