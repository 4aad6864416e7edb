"""Error types with messages that name the offending file and row."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
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
